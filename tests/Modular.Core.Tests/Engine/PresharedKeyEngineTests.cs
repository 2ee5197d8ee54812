using System.Collections.Concurrent;
using Google.Protobuf;
using Modular.Abstractions.Peers;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.Security;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;
using Modular.Core.Config;
using Modular.Core.Tests.Routing;
using Modular.Testing;

namespace Modular.Core.Tests.Engine;

/// <summary>
/// The engine and the PSK provider <c>[rosenpass] provider</c> names: it is created while Rosenpass is on (account or
/// local config, the local one winning), asked for every peer, refused peers never reach WireGuard (status says why),
/// and a rotated key is applied again in place.
/// </summary>
public sealed class PresharedKeyEngineTests
{
    private static readonly LoginResponse Login = new() { PeerConfig = new PeerConfig { Address = "100.64.0.1/10" } };
    private static readonly WgKey AccountPsk = RouteMaps.Key(0x55);
    private static readonly WgKey Rosenpass = RouteMaps.RouterA; // runs Rosenpass
    private static readonly WgKey Plain = RouteMaps.RouterB;     // does not

    [Fact]
    public async Task The_provider_decides_every_peer_refused_ones_stay_out_of_WireGuard_and_status_says_why()
    {
        var provider = new FakeProvider();
        await using var rig = Rig(provider);
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);
        provider.Keys[Rosenpass] = RouteMaps.Key(0x11);

        await rig.Engine.ApplyMapAsync(Map(accountRosenpass: true), CancellationToken.None);

        // The connection's WireGuard config (set once a path is found) carries the provider's key; a refused peer has none.
        Assert.Equal(RouteMaps.Key(0x11), Psk(rig, Rosenpass));
        Assert.Null(rig.Engine.Connections!.Find(Plain));
        Assert.False(Assert.Single(rig.Interfaces).Peers.ContainsKey(Plain), "a refused peer is never configured");
        var refused = rig.Recorder.Snapshot().Peers.Single(p => p.PublicKey == Plain.ToBase64());
        Assert.Equal(PeerConnectionState.Idle, refused.State);
        Assert.Equal("refused: strict: no Rosenpass", refused.Reason);
        var quantum = rig.Recorder.Snapshot().Peers.Single(p => p.PublicKey == Rosenpass.ToBase64());
        Assert.True(quantum.QuantumResistant);
        Assert.Equal(FakeProvider.Since, quantum.QuantumResistantSince);

        // What the provider was told: the fingerprint and address from the map, this agent's key, the account PSK, strict.
        var asked = provider.Asked[Rosenpass];
        Assert.Equal("ab".PadRight(64, '0'), asked.RosenpassFingerprint);
        Assert.Equal("100.64.0.2:9999", asked.RosenpassAddress);
        Assert.Equal(AccountPsk, asked.AccountPresharedKey);
        Assert.False(asked.Permissive);
        Assert.Null(provider.Asked[Plain].RosenpassFingerprint);

        // A provider in force with no problem: status says Rosenpass is on, from the account, and nothing is missing.
        var features = rig.Recorder.Snapshot().Features;
        Assert.True(features.Rosenpass);
        Assert.Equal("account", features.RosenpassSource);
        Assert.False(features.Unavailable.ContainsKey("rosenpass"));
    }

    [Fact]
    public async Task Without_a_provider_plugin_the_account_asking_for_permissive_Rosenpass_shows_it_not_available_with_why_and_peers_get_the_account_psk()
    {
        await using var rig = new AgentEngineTests.EngineRig((_, _) => ValueTask.CompletedTask);
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);

        await rig.Engine.ApplyMapAsync(Map(accountRosenpass: true, permissive: true), CancellationToken.None);

        var features = rig.Recorder.Snapshot().Features;
        Assert.False(features.Rosenpass);
        Assert.False(features.RosenpassPermissive);
        Assert.Equal("account", features.RosenpassSource);
        Assert.Equal("requested by the account, not available: no PSK provider plugin named \"rosenpass\" is loaded (available: (none)); peers get the account PSK",
            features.Unavailable["rosenpass"]);
        Assert.Equal(AccountPsk, Psk(rig, Rosenpass));
        Assert.Equal(AccountPsk, Psk(rig, Plain));

        // The account turning it off again: not asked for, so nothing is unavailable.
        var off = Map(accountRosenpass: false);
        off.Serial = 2;
        await rig.Engine.ApplyMapAsync(off, CancellationToken.None);
        Assert.Empty(rig.Recorder.Snapshot().Features.Unavailable);
    }

    [Fact]
    public async Task Without_a_provider_plugin_strict_Rosenpass_from_the_account_fails_closed_every_peer_is_refused_and_status_says_why()
    {
        var log = new ListLogger();
        await using var rig = new AgentEngineTests.EngineRig((_, _) => ValueTask.CompletedTask, logs: new ListLoggerFactory(log));
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);

        await rig.Engine.ApplyMapAsync(Map(accountRosenpass: true), CancellationToken.None);

        // No peer reaches WireGuard: the account PSK is no post-quantum key, and strict allows no tunnel without one.
        Assert.Null(rig.Engine.Connections!.Find(Rosenpass));
        Assert.Null(rig.Engine.Connections!.Find(Plain));
        Assert.Empty(Assert.Single(rig.Interfaces).Peers);
        var features = rig.Recorder.Snapshot().Features;
        Assert.False(features.Rosenpass);
        Assert.Equal("requested by the account, not available: no PSK provider plugin named \"rosenpass\" is loaded (available: (none)); strict: every peer is refused",
            features.Unavailable["rosenpass"]);
        Assert.All(rig.Recorder.Snapshot().Peers, peer =>
        {
            Assert.Equal(PeerConnectionState.Idle, peer.State);
            Assert.Equal("refused: strict Rosenpass is required (account) and this agent cannot provide it: no PSK provider plugin named \"rosenpass\" is loaded (available: (none))", peer.Reason);
        });
        Assert.Equal(2, rig.Recorder.Snapshot().Peers.Count);
        // One warning says it for every peer, and a second map does not repeat it.
        var again = Map(accountRosenpass: true);
        again.Serial = 2;
        await rig.Engine.ApplyMapAsync(again, CancellationToken.None);
        Assert.Single(log.Warnings, m => m.Contains("Strict Rosenpass is required (account), but this agent cannot provide it", StringComparison.Ordinal));

        // The account making it permissive lets them in with the account PSK.
        var permissive = Map(accountRosenpass: true, permissive: true);
        permissive.Serial = 3;
        await rig.Engine.ApplyMapAsync(permissive, CancellationToken.None);
        Assert.Equal(AccountPsk, Psk(rig, Rosenpass));
        Assert.Equal(AccountPsk, Psk(rig, Plain));
        Assert.DoesNotContain(rig.Recorder.Snapshot().Peers, peer => peer.Reason?.StartsWith("refused", StringComparison.Ordinal) == true);
    }

    [Fact]
    public async Task A_provider_that_fails_to_start_shows_Rosenpass_not_available_with_its_error_strict_refuses_meanwhile_and_a_later_map_that_starts_it_clears_it()
    {
        var provider = new FakeProvider { FailToStart = "the state directory is read-only" };
        await using var rig = Rig(provider);
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);
        provider.Keys[Rosenpass] = RouteMaps.Key(0x11);

        await rig.Engine.ApplyMapAsync(Map(accountRosenpass: true), CancellationToken.None);

        var features = rig.Recorder.Snapshot().Features;
        Assert.False(features.Rosenpass);
        Assert.Equal("requested by the account, not available: the PSK provider rosenpass could not start: the state directory is read-only; strict: every peer is refused until it can",
            features.Unavailable["rosenpass"]);
        Assert.Null(rig.Engine.Connections!.Find(Rosenpass));
        Assert.Null(rig.Engine.Connections!.Find(Plain));

        provider.FailToStart = null;
        var next = Map(accountRosenpass: true);
        next.Serial = 2;
        await rig.Engine.ApplyMapAsync(next, CancellationToken.None);
        Assert.True(rig.Recorder.Snapshot().Features.Rosenpass);
        Assert.Empty(rig.Recorder.Snapshot().Features.Unavailable);
        Assert.Equal(RouteMaps.Key(0x11), Psk(rig, Rosenpass)); // the provider decides again: its key, and strict refuses Plain
        Assert.Null(rig.Engine.Connections!.Find(Plain));
        Assert.Equal("refused: strict: no Rosenpass", rig.Recorder.Snapshot().Peers.Single(p => p.PublicKey == Plain.ToBase64()).Reason);
    }

    [Fact]
    public async Task A_permissive_provider_that_fails_to_start_lets_peers_in_with_the_account_psk_until_it_can()
    {
        var provider = new FakeProvider { FailToStart = "the state directory is read-only" };
        await using var rig = Rig(provider);
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);

        await rig.Engine.ApplyMapAsync(Map(accountRosenpass: true, permissive: true), CancellationToken.None);

        Assert.Equal("requested by the account, not available: the PSK provider rosenpass could not start: the state directory is read-only; peers get the account PSK until it can",
            rig.Recorder.Snapshot().Features.Unavailable["rosenpass"]);
        Assert.Equal(AccountPsk, Psk(rig, Plain));
    }

    [Fact]
    public async Task A_running_provider_that_reports_a_problem_shows_Rosenpass_not_available_with_it_and_still_decides_the_peers()
    {
        var provider = new FakeProvider { Problem = "no exchange address (settings address=, port=0); the exchange does not run" };
        await using var rig = Rig(provider, c => c with { Rosenpass = new Modular.Core.Config.RosenpassConfig { Enabled = new LocalToggle(Config: true) } });
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);
        provider.Keys[Rosenpass] = RouteMaps.Key(0x11);

        await rig.Engine.ApplyMapAsync(Map(accountRosenpass: false), CancellationToken.None);

        // Asked for by the local config, so the reason does not name the account.
        var features = rig.Recorder.Snapshot().Features;
        Assert.False(features.Rosenpass);
        Assert.Equal("config", features.RosenpassSource);
        Assert.Equal("rosenpass: no exchange address (settings address=, port=0); the exchange does not run", features.Unavailable["rosenpass"]);
        Assert.Null(rig.Engine.Connections!.Find(Plain)); // the provider stays in force: strict still refuses
        Assert.Equal(RouteMaps.Key(0x11), Psk(rig, Rosenpass));
    }

    [Fact]
    public async Task Before_the_first_map_a_locally_enabled_Rosenpass_is_pending_not_on_and_the_first_map_puts_it_in_effect()
    {
        var provider = new FakeProvider();
        var before = await FeaturesAtLogin(provider, permissive: true);

        // The provider starts only with a map: until then status must not say Rosenpass (or permissive) is on.
        Assert.False(before.Rosenpass);
        Assert.False(before.RosenpassPermissive);
        Assert.Equal("config", before.RosenpassSource);
        Assert.Equal("pending first network map (the PSK provider \"rosenpass\" starts with it)", before.Unavailable["rosenpass"]);
        Assert.Equal(0, provider.Created);

        await using var rig = Rig(provider, LocalRosenpass(permissive: true));
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);
        provider.Keys[Rosenpass] = RouteMaps.Key(0x11);
        await rig.Engine.ApplyMapAsync(Map(accountRosenpass: false), CancellationToken.None);
        var after = rig.Recorder.Snapshot().Features;
        Assert.True(after.Rosenpass);
        Assert.Equal("config", after.RosenpassSource);
        Assert.False(after.Unavailable.ContainsKey("rosenpass"));
    }

    [Fact]
    public async Task Before_the_first_map_a_locally_enabled_Rosenpass_without_its_provider_plugin_is_not_available_and_says_why()
    {
        var before = await FeaturesAtLogin(provider: null, permissive: false);

        Assert.False(before.Rosenpass);
        Assert.Equal("config", before.RosenpassSource);
        // Asked for by this machine (the account has not spoken), so the reason does not name the account.
        Assert.Equal("no PSK provider plugin named \"rosenpass\" is loaded (available: (none))", before.Unavailable["rosenpass"]);
    }

    [Fact]
    public async Task Before_the_first_map_without_a_local_setting_Rosenpass_is_off_and_nothing_is_pending()
    {
        var before = await FeaturesAtLogin(new FakeProvider(), permissive: null);

        Assert.False(before.Rosenpass);
        Assert.Equal("default", before.RosenpassSource);
        Assert.False(before.Unavailable.ContainsKey("rosenpass"), "the account decides once its first map comes; nothing is asked for before");
    }

    [Fact]
    public async Task A_rotated_key_is_applied_again_in_place()
    {
        var provider = new FakeProvider();
        await using var rig = Rig(provider);
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);
        provider.Keys[Rosenpass] = RouteMaps.Key(0x11);
        await rig.Engine.ApplyMapAsync(Map(accountRosenpass: true), CancellationToken.None);
        var connection = rig.Engine.Connections!.Find(Rosenpass);
        Assert.NotNull(connection);

        provider.Keys[Rosenpass] = RouteMaps.Key(0x12);
        provider.Rotate(Rosenpass);
        await rig.Engine.ApplyKeyChangesAsync(CancellationToken.None);

        Assert.Equal(RouteMaps.Key(0x12), Psk(rig, Rosenpass));
        Assert.Same(connection, rig.Engine.Connections.Find(Rosenpass)); // the same connection, updated: no tunnel drop
    }

    [Fact]
    public async Task The_local_config_overrides_the_account_and_without_Rosenpass_peers_get_the_account_psk()
    {
        var provider = new FakeProvider();
        await using var rig = Rig(provider, c => c with { Rosenpass = new Modular.Core.Config.RosenpassConfig { Enabled = new LocalToggle(Config: false) } });
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);

        await rig.Engine.ApplyMapAsync(Map(accountRosenpass: true), CancellationToken.None);

        Assert.Equal(0, provider.Created);
        Assert.Equal(AccountPsk, Psk(rig, Rosenpass));
        Assert.Equal(AccountPsk, Psk(rig, Plain));
    }

    [Fact]
    public async Task The_account_turning_Rosenpass_off_ends_the_provider_and_lets_the_refused_peer_in()
    {
        var provider = new FakeProvider();
        await using var rig = Rig(provider);
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);
        provider.Keys[Rosenpass] = RouteMaps.Key(0x11);
        await rig.Engine.ApplyMapAsync(Map(accountRosenpass: true), CancellationToken.None);

        await rig.Engine.ApplyMapAsync(Map(accountRosenpass: false), CancellationToken.None);

        Assert.Equal(1, provider.Created);
        Assert.True(provider.Disposed);
        Assert.Equal(AccountPsk, Psk(rig, Plain));
        Assert.Equal(AccountPsk, Psk(rig, Rosenpass));
        Assert.DoesNotContain(rig.Recorder.Snapshot().Peers, p => p.Reason?.StartsWith("refused", StringComparison.Ordinal) == true);
    }

    [Fact]
    public async Task A_peer_gone_from_the_map_is_reported_inactive_to_the_provider()
    {
        var provider = new FakeProvider();
        await using var rig = Rig(provider);
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);
        provider.Keys[Rosenpass] = RouteMaps.Key(0x11);
        await rig.Engine.ApplyMapAsync(Map(accountRosenpass: true), CancellationToken.None);
        Assert.Empty(provider.Inactive);

        var without = Map(accountRosenpass: true);
        without.Serial = 2;
        without.RemotePeers.RemoveAt(0);
        await rig.Engine.ApplyMapAsync(without, CancellationToken.None);

        Assert.Equal([Rosenpass], provider.Inactive);
    }

    [Fact]
    public async Task An_idle_peer_is_reported_inactive_is_not_asked_while_idle_and_is_asked_again_once_woken()
    {
        var provider = new FakeProvider();
        provider.Keys[Rosenpass] = RouteMaps.Key(0x11);
        var config = new AgentConfig { ManagementUrls = [new Uri("https://m.example")], Rosenpass = new Modular.Core.Config.RosenpassConfig { Enabled = new LocalToggle(Config: true) } };
        var recorder = new Modular.Core.Status.StatusRecorder(new Modular.Core.Status.InterfaceStatus("t0", "userspace", 51820, 1280),
            new Modular.Core.Status.FeatureStatus(true, "15m", [], false, "auto", false, false, false), "k",
            new Modular.Core.Status.ServiceStatus("", false, null), new Modular.Core.Status.ServiceStatus("", false, null));
        await using var keys = new Modular.Core.Engine.PresharedKeys(config, new Dictionary<string, IPresharedKeyProviderFactory> { ["rosenpass"] = provider },
            _ => null!, RouteMaps.Key(0x01), recorder, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        var map = Map(accountRosenpass: true);
        Modular.Core.Peers.RemotePeerInfo[] peers = [new(Rosenpass, "p2", "100.64.0.2", [], AccountPsk)];
        var idle = false;
        await keys.ApplyAsync(map, CancellationToken.None);
        await keys.DecideAsync(map, peers, CancellationToken.None, _ => idle);
        Assert.Single(provider.Asked);

        idle = true;
        keys.FollowIdle(_ => idle);
        provider.Asked.Clear();
        var whileIdle = await keys.DecideAsync(map, peers, CancellationToken.None, _ => idle);

        Assert.Equal([Rosenpass], provider.Inactive);
        Assert.Empty(provider.Asked); // no exchange restarted for an Idle peer
        Assert.Equal(RouteMaps.Key(0x11), Assert.Single(whileIdle).PresharedKey); // it keeps its key for the wake
        Assert.Null(whileIdle[0].QuantumResistantSince);
        Assert.False(keys.TakeChanged());

        idle = false;
        keys.FollowIdle(_ => idle);
        Assert.True(keys.TakeChanged()); // woken: the map applies again, so the provider is asked afresh
        await keys.DecideAsync(map, peers, CancellationToken.None, _ => idle);
        Assert.True(provider.Asked.ContainsKey(Rosenpass));
    }

    /// <summary>
    /// The features status shows when the engine starts, before any login or map: the run loop builds them first, and the
    /// login step (where the test stops it) comes right after. <paramref name="permissive"/> null: no local Rosenpass key.
    /// </summary>
    private static async Task<Modular.Core.Status.FeatureStatus> FeaturesAtLogin(FakeProvider? provider, bool? permissive)
    {
        using var stop = new CancellationTokenSource();
        Modular.Core.Status.FeatureStatus? seen = null;
        AgentEngineTests.EngineRig? rig = null;
        rig = new AgentEngineTests.EngineRig(
            (step, _) =>
            {
                if (step == Modular.Core.Engine.EngineStep.Login && seen is null)
                {
                    seen = rig!.Recorder.Snapshot().Features;
                    stop.Cancel();
                }

                return ValueTask.CompletedTask;
            },
            configure: permissive is { } p ? LocalRosenpass(p) : null,
            pskProviders: provider is null ? null : new Dictionary<string, IPresharedKeyProviderFactory> { ["rosenpass"] = provider });
        await using (rig)
        {
            await rig.RunAsync(stop.Token);
        }

        return seen ?? throw new InvalidOperationException("the engine never reached its login step");
    }

    private static Func<AgentConfig, AgentConfig> LocalRosenpass(bool permissive)
        => c => c with { Rosenpass = new Modular.Core.Config.RosenpassConfig { Enabled = new LocalToggle(Config: true), Permissive = permissive } };

    private static WgKey? Psk(AgentEngineTests.EngineRig rig, WgKey peer)
        => (rig.Engine.Connections!.Find(peer) ?? throw new InvalidOperationException("no connection for the peer")).Peer.PresharedKey;

    private static AgentEngineTests.EngineRig Rig(FakeProvider provider, Func<AgentConfig, AgentConfig>? configure = null)
        => new((_, _) => ValueTask.CompletedTask, configure: configure, pskProviders: new Dictionary<string, IPresharedKeyProviderFactory> { ["rosenpass"] = provider });

    /// <summary>Peer 2 runs Rosenpass (fingerprint ab00.., address 100.64.0.2:9999), peer 3 does not; the account sets a PSK (and strict unless <paramref name="permissive"/>).</summary>
    private static NetworkMap Map(bool accountRosenpass, bool permissive = false)
    {
        var map = new NetworkMap { Serial = 1, AccountPsk = ByteString.CopyFrom(AccountPsk.ToArray()) };
        map.Settings = new AccountSettings { Rosenpass = new RosenpassSettings { Enabled = accountRosenpass, Permissive = permissive } };
        var fingerprint = new byte[32];
        fingerprint[0] = 0xab;
        map.RemotePeers.Add(new RemotePeer
        {
            Hostname = "p2", WgPubKey = ByteString.CopyFrom(Rosenpass.ToArray()), AllowedIps = { "100.64.0.2/32" },
            Rosenpass = new Control.Management.RosenpassConfig { PubKeyFingerprint = ByteString.CopyFrom(fingerprint), Addr = "100.64.0.2:9999" },
        });
        map.RemotePeers.Add(new RemotePeer { Hostname = "p3", WgPubKey = ByteString.CopyFrom(Plain.ToArray()), AllowedIps = { "100.64.0.3/32" } });
        return map;
    }

    /// <summary>
    /// A PSK provider (and its factory) that allows Rosenpass peers with the key the test sets and refuses the others
    /// (strict), remembering what it was asked.
    /// </summary>
    private sealed class FakeProvider : IPresharedKeyProviderFactory, IPresharedKeyProvider, IPresharedKeyPeerLifecycle, IPresharedKeyProviderStatus
    {
        public static readonly DateTimeOffset Since = DateTimeOffset.Parse("2026-12-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture);

        public event EventHandler<WgKey>? KeyChanged;

        public ConcurrentDictionary<WgKey, WgKey> Keys { get; } = new();

        public ConcurrentDictionary<WgKey, PskPeer> Asked { get; } = new();

        public int Created { get; private set; }

        public bool Disposed { get; private set; }

        public string Description => "test";

        /// <summary>Set: <see cref="CreateAsync"/> throws with this message.</summary>
        public string? FailToStart { get; set; }

        public string? Problem { get; set; }

        public ValueTask<IPresharedKeyProvider> CreateAsync(IPluginContext context, CancellationToken cancellationToken)
        {
            if (FailToStart is { } failure)
            {
                throw new InvalidOperationException(failure);
            }

            Created++;
            return ValueTask.FromResult<IPresharedKeyProvider>(this);
        }

        public ValueTask<PskDecision> GetPresharedKeyAsync(PskPeer peer, CancellationToken cancellationToken)
        {
            Asked[peer.PublicKey] = peer;
            return ValueTask.FromResult(peer.RosenpassFingerprint is null
                ? PskDecision.Refuse("strict: no Rosenpass")
                : PskDecision.Allow(Keys[peer.PublicKey]) with { QuantumResistantSince = Since });
        }

        public void Rotate(WgKey peer) => KeyChanged?.Invoke(this, peer);

        /// <summary>The peers reported inactive, in order.</summary>
        public List<WgKey> Inactive { get; } = [];

        public void PeerInactive(WgKey peer) => Inactive.Add(peer);

        public ValueTask DisposeAsync()
        {
            Disposed = true;
            return ValueTask.CompletedTask;
        }
    }
}
