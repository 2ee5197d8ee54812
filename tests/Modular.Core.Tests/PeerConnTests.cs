using Modular.Abstractions.Peers;
using Modular.Control.Signal;
using Modular.Core.Peers;

namespace Modular.Core.Tests;

public sealed class PeerConnTests
{
    private static readonly PeerConnOptions Fast = new(
        CheckTimeout: TimeSpan.FromMilliseconds(300),
        DirectRecheckInterval: TimeSpan.FromMilliseconds(500),
        HandshakeTimeout: TimeSpan.FromSeconds(2),
        OfferInterval: TimeSpan.FromMilliseconds(200));

    [Fact]
    public async Task A_working_direct_path_connects_both_sides_p2p_with_the_checked_endpoint()
    {
        await using var pair = new ConnPair(Fast);
        pair.MakeDirectPathWork();
        var changes = StateChanges.Of(pair.AtoB);

        await pair.OpenBothAsync();
        await pair.WaitBothConnectedAsync();

        Assert.Equal(ConnectionType.P2P, pair.AtoB.ConnectionType);
        Assert.Equal(ConnPair.BHost, pair.IfaceA.Peers[pair.AtoB.PublicKey].Endpoint);
        Assert.Equal(ConnPair.AHost, pair.IfaceB.Peers[pair.BtoA.PublicKey].Endpoint);
        var status = pair.AtoB.ToStatus();
        Assert.Null(status.Reason);
        Assert.Equal("host 198.18.0.3:51820", status.RemoteCandidate);
        Assert.Equal("host 198.18.0.2:51820", status.LocalCandidate);
        Assert.Null(status.Relay);
        Assert.NotNull(status.LatencyMs);
        Assert.Equal([PeerConnectionState.Connecting, PeerConnectionState.Connected], changes.Snapshot().Select(c => c.To));
    }

    [Fact]
    public async Task Without_a_direct_path_both_sides_fall_back_to_the_relay_through_a_working_proxy()
    {
        await using var pair = new ConnPair(Fast);
        await pair.OpenBothAsync();
        await pair.WaitBothConnectedAsync();

        Assert.Equal(ConnectionType.Relayed, pair.AtoB.ConnectionType);
        var proxy = Assert.Single(pair.RelayA.Proxies);
        Assert.True(proxy.Working);
        Assert.Equal(proxy.EndpointAddr, pair.IfaceA.Peers[pair.AtoB.PublicKey].Endpoint);
        var status = pair.AtoB.ToStatus();
        Assert.Equal("198.18.0.1:33080", status.Relay);
        Assert.Equal("fake", status.Proxy);
    }

    [Fact]
    public async Task Force_relay_skips_direct_checks_even_when_a_direct_path_works()
    {
        await using var pair = new ConnPair(Fast with { ForceRelay = true });
        pair.MakeDirectPathWork();
        await pair.OpenBothAsync();
        await ConnPair.WaitForAsync(() => pair.AtoB.State == PeerConnectionState.Connected, "A Connected");
        await Task.Delay(700); // longer than the recheck interval: still no checks

        Assert.Equal(ConnectionType.Relayed, pair.AtoB.ConnectionType);
        Assert.Equal(0, pair.PathsA.Checks);
    }

    [Fact]
    public async Task A_relayed_peer_moves_to_p2p_when_a_direct_path_appears_and_the_proxy_is_closed()
    {
        await using var pair = new ConnPair(Fast);
        await pair.OpenBothAsync();
        await ConnPair.WaitForAsync(() => pair.AtoB.ConnectionType == ConnectionType.Relayed && pair.AtoB.State == PeerConnectionState.Connected, "A relayed");

        pair.MakeDirectPathWork();

        // The connection shows P2P as soon as the direct path is set and closes the proxy just after: a
        // check between the two would see a proxy still open, so the wait covers both.
        await ConnPair.WaitForAsync(
            () => pair.AtoB.ConnectionType == ConnectionType.P2P && pair.BtoA.ConnectionType == ConnectionType.P2P && pair.RelayA.Proxies.All(p => p.Closed),
            "both P2P and A's proxy closed");

        Assert.Equal(PeerConnectionState.Connected, pair.AtoB.State);
        Assert.True(Assert.Single(pair.RelayA.Proxies).Closed);
        Assert.Equal(ConnPair.BHost, pair.IfaceA.Peers[pair.AtoB.PublicKey].Endpoint);
    }

    [Fact]
    public async Task A_relay_that_drops_underneath_the_proxy_is_reconnected()
    {
        await using var pair = new ConnPair(Fast with { DirectRecheckInterval = TimeSpan.FromMinutes(5) });
        await pair.OpenBothAsync();
        await ConnPair.WaitForAsync(() => pair.AtoB.State == PeerConnectionState.Connected && pair.AtoB.ConnectionType == ConnectionType.Relayed, "A relayed");
        var first = Assert.Single(pair.RelayA.Proxies);

        await first.CloseAsync(); // raises Disconnected, as a relay going away does

        await ConnPair.WaitForAsync(() => pair.RelayA.Proxies.Count == 2 && pair.AtoB.State == PeerConnectionState.Connected, "A relayed again through a new proxy");
        var second = pair.RelayA.Proxies.Single(p => !ReferenceEquals(p, first));
        Assert.True(second.Working);
        Assert.Equal(second.EndpointAddr, pair.IfaceA.Peers[pair.AtoB.PublicKey].Endpoint);
    }

    [Fact]
    public async Task Close_returns_to_idle_removes_the_wireguard_peer_and_the_connection_can_be_opened_again()
    {
        await using var pair = new ConnPair(Fast);
        await pair.OpenBothAsync();
        await ConnPair.WaitForAsync(() => pair.AtoB.State == PeerConnectionState.Connected, "A Connected (relayed)");
        var firstProxy = Assert.Single(pair.RelayA.Proxies);

        await pair.AtoB.CloseAsync(CancellationToken.None);
        Assert.Equal(PeerConnectionState.Idle, pair.AtoB.State);
        Assert.False(pair.IfaceA.Peers.ContainsKey(pair.AtoB.PublicKey));
        Assert.True(firstProxy.Closed);
        Assert.Equal("closed", pair.AtoB.ToStatus().Reason);

        pair.MakeDirectPathWork();
        await pair.AtoB.OpenAsync(CancellationToken.None);
        await ConnPair.WaitForAsync(() => pair.AtoB.State == PeerConnectionState.Connected && pair.AtoB.ConnectionType == ConnectionType.P2P, "A Connected again, now P2P");
        Assert.True(pair.IfaceA.Peers.ContainsKey(pair.AtoB.PublicKey));
    }

    [Fact]
    public async Task No_handshake_over_the_chosen_path_goes_back_to_connecting_with_a_reason()
    {
        await using var pair = new ConnPair(Fast with { HandshakeTimeout = TimeSpan.FromMilliseconds(500) });
        pair.IfaceA.HandshakeOnSet = false;
        pair.MakeDirectPathWork();
        var reasons = new List<string?>();
        pair.AtoB.StateChanged += (_, change) => { lock (reasons) { reasons.Add(change.Reason); } };
        await pair.OpenBothAsync();

        await ConnPair.WaitForAsync(() => pair.AtoB.ToStatus().Reason?.Contains("no WireGuard handshake", StringComparison.Ordinal) == true, "a no-handshake reason");
        Assert.NotEqual(PeerConnectionState.Connected, pair.AtoB.State);
        Assert.Null(pair.AtoB.ToStatus().ConnectionType);
    }

    [Fact]
    public async Task A_dead_peer_is_reconnected_long_before_its_handshake_goes_stale_and_both_sides_start_a_new_session()
    {
        await using var pair = new ConnPair(Fast with { SilentPeer = TimeSpan.FromSeconds(1), SilenceProbeTimeout = TimeSpan.FromSeconds(1) });
        pair.MakeDirectPathWork();
        var changes = StateChanges.Of(pair.AtoB);
        var remoteChanges = StateChanges.Of(pair.BtoA);
        await pair.OpenBothAsync();
        await pair.WaitBothConnectedAsync();

        // Keepalives keep arriving: three silent-periods later A is still connected, never reconnected.
        await Task.Delay(TimeSpan.FromSeconds(3));
        Assert.Equal(PeerConnectionState.Connected, pair.AtoB.State);
        Assert.DoesNotContain(changes.Snapshot(), c => c.Reason?.Contains("nothing received", StringComparison.Ordinal) == true);

        // The remote dies: nothing arrives and no handshake is answered (its last one stays fresh: staleness alone would take minutes).
        pair.IfaceA.HandshakeOnSet = false;
        pair.IfaceA.RemoteSends = false;
        await ConnPair.WaitForAsync(
            () => changes.Snapshot().Any(c => c.To == PeerConnectionState.Connecting && c.Reason?.EndsWith("and no answer to a new handshake", StringComparison.Ordinal) == true),
            "a reconnect for silence");
        Assert.Contains(pair.IfaceA.Calls, c => c.StartsWith("remove", StringComparison.Ordinal));

        // The failed attempt renewed A's session: B, which still believed in the old one, starts over too.
        await ConnPair.WaitForAsync(
            () => remoteChanges.Snapshot().Any(c => c.To == PeerConnectionState.Connecting && c.Reason == "the peer restarted its connection"),
            "B starting over on A's new session");
    }

    [Fact]
    public async Task A_live_peer_that_only_listens_answers_the_handshake_probe_and_stays_connected()
    {
        // Between idle peers one side's keepalives can keep resetting the other's timer, so that side never sends.
        await using var pair = new ConnPair(Fast with { SilentPeer = TimeSpan.FromSeconds(1), SilenceProbeTimeout = TimeSpan.FromSeconds(1) });
        pair.MakeDirectPathWork();
        var changes = StateChanges.Of(pair.AtoB);
        await pair.OpenBothAsync();
        await pair.WaitBothConnectedAsync();
        var removesBefore = pair.IfaceA.Calls.Count(c => c.StartsWith("remove", StringComparison.Ordinal));

        pair.IfaceA.RemoteSends = false; // B sends nothing, but answers handshakes
        await ConnPair.WaitForAsync(() => pair.IfaceA.Calls.Count(c => c.StartsWith("remove", StringComparison.Ordinal)) > removesBefore + 1, "two handshake probes");
        Assert.Equal(PeerConnectionState.Connected, pair.AtoB.State);
        Assert.DoesNotContain(changes.Snapshot(), c => c.To == PeerConnectionState.Connecting && c.Reason?.Contains("nothing received", StringComparison.Ordinal) == true);
    }

    [Fact]
    public async Task A_goodbye_from_the_peers_current_session_reconnects_at_once_and_a_stale_one_is_ignored()
    {
        await using var pair = new ConnPair(Fast);
        pair.MakeDirectPathWork();
        var changes = StateChanges.Of(pair.AtoB);
        await pair.OpenBothAsync();
        await pair.WaitBothConnectedAsync();

        var goodbye = pair.BtoA.Goodbye()!;
        Assert.Equal(SignalBody.Types.Type.Goodbye, goodbye.Type);
        var stale = goodbye.Clone();
        stale.SessionId++;
        await pair.AtoB.OnSignalAsync(stale, CancellationToken.None);
        await Task.Delay(TimeSpan.FromSeconds(1.5));
        Assert.Equal(PeerConnectionState.Connected, pair.AtoB.State);

        await pair.AtoB.OnSignalAsync(goodbye, CancellationToken.None);
        await ConnPair.WaitForAsync(
            () => changes.Snapshot().Any(c => c.To == PeerConnectionState.Connecting && c.Reason == "the peer said goodbye (it is stopping)"),
            "a reconnect on the goodbye");
    }

    [Fact]
    public async Task Offers_with_malformed_credentials_or_candidates_are_ignored()
    {
        await using var pair = new ConnPair(Fast);
        await pair.AtoB.OpenAsync(CancellationToken.None); // B never opens: only hostile offers arrive
        var hostile = new SignalBody { Type = SignalBody.Types.Type.Offer, Ufrag = "!", Pwd = "short", SessionId = 1 };
        hostile.Candidates.Add("host not-an-address");
        await pair.AtoB.OnSignalAsync(hostile, CancellationToken.None);
        var badCandidates = new SignalBody { Type = SignalBody.Types.Type.Answer, Ufrag = "abcdefgh", Pwd = "abcdefghijklmnopqrstuvwx", SessionId = 2 };
        badCandidates.Candidates.Add("host 0.0.0.0:0");
        badCandidates.Candidates.Add(new string('x', 10_000));
        await pair.AtoB.OnSignalAsync(badCandidates, CancellationToken.None);
        await Task.Delay(500);

        // The well-formed answer had no usable candidate: no check ran against garbage, the relay was used instead.
        Assert.Equal(0, pair.PathsA.Checks);
        Assert.NotEqual(PeerConnectionState.Idle, pair.AtoB.State);
    }
}
