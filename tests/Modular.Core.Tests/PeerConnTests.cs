using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
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

    /// <summary>How often a connection's loop looks at its peer (the longest it waits without a wake-up).</summary>
    private static readonly TimeSpan LoopInterval = TimeSpan.FromSeconds(1);

    private static FakeTimeProvider NewClock() => new(DateTimeOffset.Parse("2026-03-01T12:00:00Z", System.Globalization.CultureInfo.InvariantCulture));

    private static RemotePeerInfo PeerB() => new(ConnPair.RandomKey(), "b", "100.64.0.3", [IPNetwork.Parse("100.64.0.3/32")], null);

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
    public async Task Both_sides_of_a_reconnect_agree_on_the_path_the_side_whose_checks_failed_goes_direct_when_the_peers_check_arrives()
    {
        // Issue 13: each side checks on its own, so one side's checks can pass (P2P) while the other's fail (relayed;
        // here B's check window ends before an answer). The relayed side must not wait for its periodic recheck: the
        // peer's valid check for this session is proof the direct path works, and both must end on it.
        var recheck = TimeSpan.FromSeconds(30);
        var clock = NewClock();
        await using var pair = new ConnPair(Fast with { DirectRecheckInterval = recheck }, clock);
        pair.MakeDirectPathWork();
        pair.PathsB.Unanswered = 1; // B's first check goes unanswered: B falls back to the relay; A's pass
        var opened = clock.GetUtcNow();
        await pair.OpenBothAsync();

        // Well before the periodic recheck: a third of its interval on the connections' clock.
        static bool Agree(ConnPair p) => p.AtoB.ConnectionType == ConnectionType.P2P && p.BtoA.ConnectionType == ConnectionType.P2P
            && p.AtoB.State == PeerConnectionState.Connected && p.BtoA.State == PeerConnectionState.Connected && p.RelayB.Proxies.All(x => x.Closed);
        await ConnPair.WaitForAsync(
            () =>
            {
                if (Agree(pair) || clock.GetUtcNow() - opened >= recheck / 3)
                {
                    return true;
                }

                clock.Advance(TimeSpan.FromMilliseconds(20));
                return false;
            },
            "both sides on one path, or the bound passed",
            seconds: 60);

        Assert.True(Agree(pair), $"both P2P within {(recheck / 3).TotalSeconds} s: A {pair.AtoB.ConnectionType} {pair.AtoB.State}, B {pair.BtoA.ConnectionType} {pair.BtoA.State}");
        Assert.True(Assert.Single(pair.RelayB.Proxies).Closed); // B did fall back to the relay first, and left it
        Assert.Empty(pair.RelayA.Proxies);
        Assert.Equal(ConnPair.BHost, pair.IfaceA.Peers[pair.AtoB.PublicKey].Endpoint);
        Assert.Equal(ConnPair.AHost, pair.IfaceB.Peers[pair.BtoA.PublicKey].Endpoint);
    }

    [Fact]
    public async Task Force_relay_skips_direct_checks_even_when_a_direct_path_works()
    {
        await using var pair = new ConnPair(Fast with { ForceRelay = true }, NewClock());
        pair.MakeDirectPathWork();
        await pair.OpenBothAsync();
        await pair.RunUntilAsync(() => pair.AtoB.State == PeerConnectionState.Connected, "A Connected");
        await pair.ClockA!.AdvanceAsync(2 * Fast.Recheck); // longer than the recheck interval, and A's loop looked then: still no checks

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

        // The connection shows P2P as soon as the direct path is set and closes the proxy once that path is proven
        // (here at once: the fake WireGuard handshakes on the new endpoint), so the wait covers both.
        await ConnPair.WaitForAsync(
            () => pair.AtoB.ConnectionType == ConnectionType.P2P && pair.BtoA.ConnectionType == ConnectionType.P2P && pair.RelayA.Proxies.All(p => p.Closed),
            "both P2P and A's proxy closed");

        Assert.Equal(PeerConnectionState.Connected, pair.AtoB.State);
        Assert.True(Assert.Single(pair.RelayA.Proxies).Closed);
        Assert.Equal(ConnPair.BHost, pair.IfaceA.Peers[pair.AtoB.PublicKey].Endpoint);
    }

    /// <summary>
    /// Issue 16: the remote may still send through the relay when this side switches to a direct path, so the relayed
    /// proxy stays until the direct path carries something back. Unproven for <see cref="PeerConnOptions.DirectProof"/>,
    /// WireGuard goes back to that same proxy; once bytes arrive on the direct endpoint, the proxy is closed.
    /// </summary>
    [Fact]
    public async Task A_relayed_peer_switching_to_p2p_keeps_its_proxy_until_the_direct_path_is_proven_and_else_returns_to_it()
    {
        var clock = NewClock();
        var options = Fast with { DirectRecheckInterval = TimeSpan.FromSeconds(5) };
        await using var pair = new ConnPair(options, clock);
        await pair.OpenBothAsync();
        await pair.RunUntilAsync(() => pair.AtoB.ConnectionType == ConnectionType.Relayed && pair.AtoB.State == PeerConnectionState.Connected, "A relayed");
        var proxy = Assert.Single(pair.RelayA.Proxies);

        // The direct path passes the checks but carries nothing back: no handshake on it, no bytes from B.
        pair.IfaceA.RemoteSends = false;
        pair.IfaceA.Answers = endpoint => !ConnPair.BHost.Equals(endpoint);
        pair.MakeDirectPathWork();
        await pair.RunUntilAsync(() => pair.AtoB.ConnectionType == ConnectionType.P2P, "A switched to the direct path");
        var switched = clock.GetUtcNow();
        Assert.Equal(ConnPair.BHost, pair.IfaceA.Peers[pair.AtoB.PublicKey].Endpoint);
        Assert.False(proxy.Closed);

        await pair.RunUntilAsync(() => pair.AtoB.ConnectionType == ConnectionType.Relayed, "A back on the relay", seconds: 60);
        Assert.True(clock.GetUtcNow() - switched >= options.DirectProof, $"returned after {clock.GetUtcNow() - switched}, not before {options.DirectProof}");
        Assert.Same(proxy, Assert.Single(pair.RelayA.Proxies));
        Assert.False(proxy.Closed);
        Assert.Equal(proxy.EndpointAddr, pair.IfaceA.Peers[pair.AtoB.PublicKey].Endpoint);
        Assert.Equal(PeerConnectionState.Connected, pair.AtoB.State);

        // B's packets arrive again; the next recheck switches, the bytes on the direct endpoint prove it, the proxy goes.
        pair.IfaceA.RemoteSends = true;
        await pair.RunUntilAsync(() => proxy.Closed, "A's proxy closed once the direct path was proven", seconds: 60);
        Assert.Equal(ConnectionType.P2P, pair.AtoB.ConnectionType);
        Assert.Equal(ConnPair.BHost, pair.IfaceA.Peers[pair.AtoB.PublicKey].Endpoint);
        Assert.Single(pair.RelayA.Proxies);
    }

    /// <summary>
    /// Issue 16, redirect: the event that calls RedirectAs is the relay -> P2P switch that keeps the relayed proxy
    /// (DirectTrial). Before WireGuard is pointed at the direct endpoint, the kept proxy is redirected as that endpoint,
    /// so packets the remote still sends through the relay do not roam WireGuard back to the proxy. Bytes the proxy
    /// handed over do not prove the direct path (they look direct now): with every byte relayed the trial returns to
    /// the relay after <see cref="PeerConnOptions.DirectProof"/>, undoing the redirect before WireGuard points at the
    /// proxy again; with bytes beyond the proxy's the next switch is proven and the proxy closed.
    /// </summary>
    [Fact]
    public async Task Switching_to_p2p_redirects_the_kept_proxy_as_the_direct_endpoint_and_only_bytes_beyond_the_proxys_prove_the_path()
    {
        var clock = NewClock();
        var options = Fast with { DirectRecheckInterval = TimeSpan.FromSeconds(5) };
        await using var pair = new ConnPair(options, clock);
        await pair.OpenBothAsync();
        await pair.RunUntilAsync(() => pair.AtoB.ConnectionType == ConnectionType.Relayed && pair.AtoB.State == PeerConnectionState.Connected, "A relayed");
        var proxy = Assert.Single(pair.RelayA.Proxies);
        var key = pair.AtoB.PublicKey;

        // Everything WireGuard receives came through the relay (the remote keeps sending there).
        proxy.Delivered = () => pair.IfaceA.RxBytes;
        var wireGuardAtRedirect = new ConcurrentQueue<IPEndPoint?>();
        proxy.OnRedirect = _ => wireGuardAtRedirect.Enqueue(pair.IfaceA.Peers[key].Endpoint);
        var counting = pair.IfaceA.RxBytes;
        await ConnPair.WaitForAsync(() => pair.IfaceA.RxBytes > counting + (3 * 32), "a few stats samples with the proxy counting");

        pair.MakeDirectPathWork();
        await pair.RunUntilAsync(() => pair.AtoB.ConnectionType == ConnectionType.P2P, "A switched to the direct path");
        var switched = clock.GetUtcNow();
        Assert.Equal(new[] { ConnPair.BHost }, proxy.Redirects);
        Assert.Equal(new IPEndPoint?[] { proxy.EndpointAddr }, wireGuardAtRedirect); // redirected before WireGuard left the proxy
        Assert.Equal(ConnPair.BHost, pair.IfaceA.Peers[key].Endpoint);
        Assert.False(proxy.Closed);

        await pair.RunUntilAsync(() => pair.AtoB.ConnectionType == ConnectionType.Relayed, "A back on the relay: relayed bytes proved nothing", seconds: 60);
        Assert.True(clock.GetUtcNow() - switched >= options.DirectProof, $"returned after {clock.GetUtcNow() - switched}, not before {options.DirectProof}");
        Assert.Equal(new[] { ConnPair.BHost, proxy.EndpointAddr }, proxy.Redirects);
        Assert.Equal(new IPEndPoint?[] { proxy.EndpointAddr, ConnPair.BHost }, wireGuardAtRedirect); // undone while WireGuard was still direct
        Assert.Equal(proxy.EndpointAddr, pair.IfaceA.Peers[key].Endpoint);
        Assert.False(proxy.Closed);

        // The relay goes quiet: what WireGuard receives from now on is not the proxy's. The next switch is proven.
        var frozen = pair.IfaceA.RxBytes;
        proxy.Delivered = () => frozen;
        await pair.RunUntilAsync(() => proxy.Closed, "A's proxy closed once bytes beyond the proxy's proved the direct path", seconds: 60);
        Assert.Equal(ConnectionType.P2P, pair.AtoB.ConnectionType);
        Assert.Equal(ConnPair.BHost, pair.IfaceA.Peers[key].Endpoint);
        Assert.Equal(new[] { ConnPair.BHost, proxy.EndpointAddr, ConnPair.BHost }, proxy.Redirects);
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
        var silent = TimeSpan.FromSeconds(1);
        await using var pair = new ConnPair(Fast with { SilentPeer = silent, SilenceProbeTimeout = TimeSpan.FromSeconds(1) }, NewClock());
        pair.MakeDirectPathWork();
        var changes = StateChanges.Of(pair.AtoB);
        var remoteChanges = StateChanges.Of(pair.BtoA);
        await pair.OpenBothAsync();
        await pair.WaitBothConnectedAsync();
        var removesBefore = pair.IfaceA.Calls.Count(c => c.StartsWith("remove", StringComparison.Ordinal));

        // Keepalives keep arriving: three silent-periods later A is still connected, never reconnected. Each period, a
        // keepalive arrives and then A's loop looks at the peer a silent-period on.
        for (var period = 0; period < 3; period++)
        {
            var received = pair.AtoB.ToStatus().RxBytes;
            await ConnPair.WaitForAsync(() => pair.AtoB.ToStatus().RxBytes > received, "a keepalive arriving");
            await pair.ClockA!.AdvanceAsync(silent);
        }

        Assert.Equal(PeerConnectionState.Connected, pair.AtoB.State);
        Assert.DoesNotContain(changes.Snapshot(), c => c.Reason?.Contains("nothing received", StringComparison.Ordinal) == true);
        Assert.Equal(removesBefore, pair.IfaceA.Calls.Count(c => c.StartsWith("remove", StringComparison.Ordinal))); // not even probed

        // The remote dies: nothing arrives and no handshake is answered (its last one stays fresh: staleness alone would take minutes).
        pair.IfaceA.HandshakeOnSet = false;
        pair.IfaceA.RemoteSends = false;
        await pair.RunUntilAsync(
            () => changes.Snapshot().Any(c => c.To == PeerConnectionState.Connecting && c.Reason?.EndsWith("and no answer to a new handshake", StringComparison.Ordinal) == true),
            "a reconnect for silence");
        Assert.Contains(pair.IfaceA.Calls, c => c.StartsWith("remove", StringComparison.Ordinal));

        // The failed attempt renewed A's session: B, which still believed in the old one, starts over too.
        await pair.RunUntilAsync(
            () => remoteChanges.Snapshot().Any(c => c.To == PeerConnectionState.Connecting && c.Reason == "the peer restarted its connection"),
            "B starting over on A's new session");
    }

    [Fact]
    public async Task Idle_peers_are_not_torn_down_keepalives_arriving_past_the_first_sessions_expiry_keep_the_pair_connected()
    {
        // Issue 13: an idle pair's keepalives keep arriving, but WireGuard starts no handshake of its own for minutes
        // (the fake does not either): its age must not reconnect the pair. Once old enough, the peer is asked for a new one.
        await using var pair = new ConnPair(Fast, NewClock());
        pair.MakeDirectPathWork();
        var changes = StateChanges.Of(pair.AtoB);
        await pair.OpenBothAsync();
        await pair.WaitBothConnectedAsync();
        var connectedAt = pair.Clock!.GetUtcNow();
        var changesBefore = changes.Snapshot().Count;
        var removesBefore = pair.IfaceA.Calls.Count(c => c.StartsWith("remove", StringComparison.Ordinal));

        // Seven minutes in 20 s steps, a keepalive arriving in each.
        for (var elapsed = TimeSpan.Zero; elapsed < TimeSpan.FromMinutes(7); elapsed += TimeSpan.FromSeconds(20))
        {
            var received = pair.AtoB.ToStatus().RxBytes;
            await ConnPair.WaitForAsync(() => pair.AtoB.ToStatus().RxBytes > received, "a keepalive arriving");
            await pair.ClockA!.AdvanceAsync(TimeSpan.FromSeconds(20));
            Assert.True(pair.AtoB.State == PeerConnectionState.Connected, $"A Connected {elapsed.TotalSeconds + 20} s after connecting ({pair.AtoB.ToStatus().Reason})");
        }

        Assert.Empty(changes.Snapshot().Skip(changesBefore)); // never left Connected
        // The old handshake was renewed by asking for a new one (the peer set anew), not by a new attempt.
        Assert.True(pair.IfaceA.Calls.Count(c => c.StartsWith("remove", StringComparison.Ordinal)) > removesBefore, "the peer was asked for a new handshake");
        await ConnPair.WaitForAsync(() => pair.AtoB.ToStatus().LastHandshake > connectedAt, "a handshake newer than the first");
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
        await using var pair = new ConnPair(Fast, NewClock());
        pair.MakeDirectPathWork();
        var changes = StateChanges.Of(pair.AtoB);
        await pair.OpenBothAsync();
        await pair.WaitBothConnectedAsync();

        var goodbye = pair.BtoA.Goodbye()!;
        Assert.Equal(SignalBody.Types.Type.Goodbye, goodbye.Type);
        var stale = goodbye.Clone();
        stale.SessionId++;
        await pair.AtoB.OnSignalAsync(stale, CancellationToken.None);
        await pair.ClockA!.AdvanceAsync(LoopInterval); // A's loop looked at the peer again since
        Assert.Equal(PeerConnectionState.Connected, pair.AtoB.State);

        await pair.AtoB.OnSignalAsync(goodbye, CancellationToken.None);
        await ConnPair.WaitForAsync(
            () => changes.Snapshot().Any(c => c.To == PeerConnectionState.Connecting && c.Reason == "the peer said goodbye (it is stopping)"),
            "a reconnect on the goodbye");
    }

    [Fact]
    public async Task Item11_a_replayed_offer_of_an_older_session_does_not_tear_down_a_connected_peer()
    {
        await using var pair = new ConnPair(Fast, NewClock());
        pair.MakeDirectPathWork();
        await pair.BtoA.OpenAsync(CancellationToken.None);
        await pair.RunUntilAsync(() => pair.SignalB.Bodies.Any(b => b.Type == SignalBody.Types.Type.Offer), "B offering");
        var captured = pair.SignalB.Bodies.First(b => b.Type == SignalBody.Types.Type.Offer); // as an eavesdropper on signal saw it
        await pair.AtoB.OpenAsync(CancellationToken.None);
        await pair.WaitBothConnectedAsync();

        // B starts a new session (it restarted, say); A follows it and both connect again.
        await pair.BtoA.CloseAsync(CancellationToken.None);
        await pair.BtoA.OpenAsync(CancellationToken.None);
        await pair.RunUntilAsync(
            () => pair.SignalB.Bodies.LastOrDefault(b => b.Type == SignalBody.Types.Type.Offer) is { } offer && offer.SessionId != captured.SessionId
                && pair.AtoB.IsCurrentRemoteSession(offer.SessionId) && pair.AtoB.State == PeerConnectionState.Connected && pair.BtoA.State == PeerConnectionState.Connected,
            "both Connected on B's new session");
        var current = pair.SignalB.Bodies.Last(b => b.Type == SignalBody.Types.Type.Offer).SessionId;
        var changes = StateChanges.Of(pair.AtoB);

        // The captured offer of B's old session, replayed to A (signal cannot tell a copy from the original).
        await pair.AtoB.OnSignalAsync(captured.Clone(), CancellationToken.None);
        await pair.ClockA!.AdvanceAsync(LoopInterval); // A's loop looked at the peer again since

        Assert.Equal(PeerConnectionState.Connected, pair.AtoB.State);
        Assert.DoesNotContain(changes.Snapshot(), c => c.To == PeerConnectionState.Connecting);
        Assert.True(pair.AtoB.IsCurrentRemoteSession(current));
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
        await ConnPair.WaitForAsync(() => pair.AtoB.ConnectionType is not null, "A chose a path");

        // The well-formed answer had no usable candidate: no check ran against garbage, the relay was used instead.
        Assert.Equal(0, pair.PathsA.Checks);
        Assert.Equal(ConnectionType.Relayed, pair.AtoB.ConnectionType);
    }

    [Fact]
    public async Task A_map_update_while_the_connect_loop_sets_the_wireguard_peer_leaves_the_new_allowed_ips()
    {
        var clock = NewClock(); // stands still: nothing times out while the test holds WireGuard
        var iface = new RecordingWgIface { Time = clock };
        var signaling = new AnsweringSignaling();
        var peer = PeerB();
        await using var conn = new PeerConn(peer, iface, signaling, new ScriptedPaths(), new FakeRelay(), Fast with { ForceRelay = true }, clock, NullLogger.Instance);
        signaling.Conns[peer.PublicKey] = conn;
        var held = iface.HoldNextSet();
        await conn.OpenAsync(CancellationToken.None);

        // The loop chose the relay and is setting the WireGuard peer with the allowed IPs it has; WireGuard has not
        // taken them yet when the map changes them.
        var setting = await held.Entered.Task.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(peer.AllowedIps, setting.AllowedIps);
        var updated = peer with { AllowedIps = [IPNetwork.Parse("100.64.0.3/32"), IPNetwork.Parse("10.9.0.0/16")] };
        var update = conn.UpdatePeerAsync(updated, CancellationToken.None).AsTask();
        held.Release.SetResult();
        await held.Applied.Task.WaitAsync(TimeSpan.FromSeconds(20));
        await update.WaitAsync(TimeSpan.FromSeconds(20));

        Assert.Equal(updated.AllowedIps, iface.Peers[peer.PublicKey].AllowedIps);
        Assert.Equal(updated.AllowedIps, iface.Sets.Last().AllowedIps);
    }

    [Fact]
    public async Task An_offer_that_arrives_as_the_connection_shows_connecting_is_taken_and_answered()
    {
        var signaling = new AnsweringSignaling(); // records; no remote side answers
        await using var conn = new PeerConn(PeerB(), new RecordingWgIface(), signaling, new ScriptedPaths(), new FakeRelay(), Fast, NewClock(), NullLogger.Instance);
        var offer = new SignalBody { Type = SignalBody.Types.Type.Offer, Ufrag = "remoteUf", Pwd = "remotePasswordRemotePass", SessionId = 7 };
        Task? delivered = null;

        // The peer's offer arrives (on signal's thread) the moment the connection shows Connecting with its new session.
        conn.StateChanged += (_, change) =>
        {
            if (change.To == PeerConnectionState.Connecting)
            {
                delivered ??= conn.OnSignalAsync(offer, CancellationToken.None);
            }
        };
        await conn.OpenAsync(CancellationToken.None);
        Assert.NotNull(delivered);
        await delivered.WaitAsync(TimeSpan.FromSeconds(20));

        Assert.True(conn.IsCurrentRemoteSession(7));
        Assert.Contains(signaling.Sent, b => b.Type == SignalBody.Types.Type.Answer);
    }

    [Fact]
    public async Task The_go_idle_notice_that_signal_never_takes_ends_when_the_connections_clock_says_the_time_is_up()
    {
        var clock = NewClock();
        var iface = new RecordingWgIface { Time = clock };
        var signaling = new HangingSignaling();
        var peer = PeerB();
        await using var conn = new PeerConn(peer, iface, signaling, new ScriptedPaths(), new FakeRelay(), Fast, clock, NullLogger.Instance);
        await conn.OpenAsync(CancellationToken.None);
        var standIn = IPEndPoint.Parse("127.0.0.1:40999");

        // An hour on the real clock would hang the test; on the connection's clock it passes at once.
        var goIdle = conn.GoIdleAsync(standIn, "lazy: no traffic", TimeSpan.FromHours(1), CancellationToken.None).AsTask();
        await ConnPair.WaitForAsync(() => signaling.Sent.Any(b => b.Type == SignalBody.Types.Type.GoIdle), "the go-idle notice on its way");
        Assert.False(goIdle.IsCompleted);
        clock.Advance(TimeSpan.FromHours(1));

        await goIdle.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.True(conn.IsParked);
        Assert.Equal(standIn, iface.Peers[peer.PublicKey].Endpoint);
    }
}
