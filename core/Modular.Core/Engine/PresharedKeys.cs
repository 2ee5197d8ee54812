using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Peers;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.Security;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;
using RosenpassConfig = Modular.Control.Management.RosenpassConfig;
using Modular.Core.Config;
using Modular.Core.Peers;
using Modular.Core.Status;

namespace Modular.Core.Engine;

/// <summary>
/// The PSK provider in force (<c>[rosenpass] provider</c>, created while Rosenpass is on by the local flag/key or, absent
/// locally, by the account) and its decision for every peer of each map: the PSK it gives replaces the account PSK,
/// and a peer it refuses never reaches the connection manager (status shows it Idle with the provider's reason).
/// A key rotation (<see cref="IPresharedKeyProvider.KeyChanged"/>) only marks the keys stale; the engine's stats loop
/// then applies the map in force again (<see cref="MapApplier.ApplyKeyChangesAsync"/>), which updates the changed
/// peers' PSK in place (no tunnel drop).
/// <para>
/// Nothing pretends: while Rosenpass is asked for but no provider gives its keys (none loaded by that name, it failed
/// to start, or it runs and reports a problem through <see cref="IPresharedKeyProviderStatus"/>), <see cref="NotAvailable"/>
/// says why, and status shows Rosenpass as not available, the way <see cref="FlowSwitch"/> does for flow logging.
/// </para>
/// <para>
/// Fail closed: strict Rosenpass (not permissive) that this host cannot provide (no provider loaded by that name, or it
/// failed to start) refuses every peer, as a strict provider refuses every peer without Rosenpass: strict means no
/// tunnel without a post-quantum key, and an agent lacking the plugin must not quietly fall back to the account PSK.
/// Permissive falls back to the account PSK (or none), which is what permissive allows.
/// </para>
/// </summary>
/// <remarks>
/// Threading: <see cref="ApplyAsync"/>, <see cref="DecideAsync"/> and <see cref="DisposeAsync"/> run under the map applier's gate (one at a
/// time); <see cref="TakeChanged"/> and the provider's event may run on any thread.
/// </remarks>
internal sealed class PresharedKeys : IAsyncDisposable
{
    private readonly AgentConfig _config;
    private readonly IReadOnlyDictionary<string, IPresharedKeyProviderFactory> _factories;
    private readonly Func<string, IPluginContext> _contextFor;
    private readonly WgKey _ownKey;
    private readonly StatusRecorder _recorder;
    private readonly ILogger _logger;

    // Written under the applier's gate only.
    // Volatile: status and the stats loop read it on their own threads.
    private volatile IPresharedKeyProvider? _provider;
    private bool _missingWarned;
    private Dictionary<WgKey, string> _refused = [];

    // Why the host has no provider in force while Rosenpass is asked for (none loaded, it failed to start); null
    // otherwise. Written under the applier's gate, read by status.
    private volatile string? _missing;

    // True when _missing is a provider that failed to start (the next map tries it again).
    private volatile bool _missingRetried;

    // Whether the last map's Rosenpass is permissive; written under the applier's gate, read by status.
    private volatile bool _permissive;

    // Set while strict Rosenpass is asked for and _missing says why no provider gives its keys: every peer is refused
    // with this reason (fail closed). Written under the applier's gate.
    private string? _refuseAll;

    private int _changed;

    // The peers the provider holds a decision for (asked, not told inactive since), and the Idle peers it was told about,
    // with the decision they keep while Idle. Under _peersLock: the applier's gate and the stats loop both update them.
    private readonly object _peersLock = new();
    private readonly HashSet<WgKey> _asked = [];
    private readonly Dictionary<WgKey, PskDecision> _idle = [];

    /// <param name="contextFor">The plugin context for the provider's name.</param>
    public PresharedKeys(AgentConfig config, IReadOnlyDictionary<string, IPresharedKeyProviderFactory> factories, Func<string, IPluginContext> contextFor, WgKey ownKey, StatusRecorder recorder, ILogger logger)
    {
        _config = config;
        _factories = factories;
        _contextFor = contextFor;
        _ownKey = ownKey;
        _recorder = recorder;
        _logger = logger;
    }

    /// <summary>Told when a provider starts (true) or ends (false): the firewall admits the exchange's port meanwhile.</summary>
    public Func<bool, CancellationToken, Task>? ProviderRunning { get; init; }

    /// <summary>The provider in force; null while Rosenpass is off (or its provider is not loaded).</summary>
    public IPresharedKeyProvider? Provider => _provider;

    /// <summary>
    /// "rosenpass" and why, while Rosenpass is asked for (by the last map applied) but no provider gives its keys: none
    /// loaded by the configured name, it failed to start (with what follows: permissive, peers get the account PSK;
    /// strict, every peer is refused), or it reports a problem; else empty. For <see cref="FeatureStatusBuilder.Build"/>.
    /// </summary>
    public IReadOnlyDictionary<string, string> NotAvailable
    {
        get
        {
            var why = _missing is { } missing
                ? $"{missing}; {(_permissive ? "peers get the account PSK" : "strict: every peer is refused")}{(_missingRetried ? " until it can" : "")}"
                : _provider is IPresharedKeyProviderStatus { Problem: { Length: > 0 } problem } ? $"{_config.Rosenpass.Provider}: {problem}" : null;
            return why is null ? NoReasons : new Dictionary<string, string>(StringComparer.Ordinal) { ["rosenpass"] = why };
        }
    }

    private static readonly IReadOnlyDictionary<string, string> NoReasons = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>The peers refused by the last decision, with the provider's reason.</summary>
    public IReadOnlyDictionary<WgKey, string> Refused => _refused;

    /// <summary>The provider's own exchange traffic with <paramref name="peer"/> so far (0 when it does not report it): not activity.</summary>
    public long TrafficBytes(WgKey peer) => _provider is IPresharedKeyTraffic traffic ? traffic.TrafficBytes(peer) : 0;

    /// <summary>True once after the provider rotated a key: the map in force must be applied again.</summary>
    public bool TakeChanged() => Interlocked.Exchange(ref _changed, 0) == 1;

    /// <summary>
    /// Resolves Rosenpass for <paramref name="map"/> (the local flag or key over the account's setting) and starts or
    /// ends the provider to match; <see cref="NotAvailable"/> then says why, when it is asked for but not in force, and
    /// strict Rosenpass without a provider makes <see cref="DecideAsync"/> refuse every peer (fail closed).
    /// Called before status is built for the map and before <see cref="DecideAsync"/>.
    /// </summary>
    public async Task ApplyAsync(NetworkMap map, CancellationToken cancellationToken)
    {
        var account = AccountFeatures.Of(map.Settings);
        var rosenpass = FeatureStatusBuilder.Rosenpass(_config, account);
        _permissive = FeatureStatusBuilder.RosenpassPermissive(_config, account);
        var provider = await EnsureProviderAsync(rosenpass.Enabled, cancellationToken);
        var refuseAll = rosenpass.Enabled && provider is null && !_permissive && _missing is { } missing
            ? $"strict Rosenpass is required ({rosenpass.Source}) and this agent cannot provide it: {missing}"
            : null;
        if (refuseAll is not null && _refuseAll is null)
        {
            _logger.LogWarning("Strict Rosenpass is required ({Source}), but this agent cannot provide it: {Missing}; every peer is refused (no tunnel without a post-quantum key) until it can",
                rosenpass.Source, _missing);
        }
        else if (refuseAll is null && _refuseAll is not null)
        {
            _logger.LogInformation("Strict Rosenpass without a PSK provider ended: peers are decided again");
        }

        _refuseAll = refuseAll;
    }

    /// <summary>
    /// The peers of <paramref name="map"/> as the PSK provider decides them (the one <see cref="ApplyAsync"/> put in force): allowed ones with its PSK (and whether that
    /// is post-quantum), refused ones left out. Without a provider the peers go unchanged, with the account PSK the map
    /// gave them (Rosenpass off, or permissive), or, strict Rosenpass without a provider, every one is refused (fail
    /// closed). A provider that throws refuses that peer: failing closed is the strict choice, and a permissive provider
    /// never throws for a peer without Rosenpass.
    /// </summary>
    /// <param name="isIdle">Whether a peer is Idle (lazy): it is not asked (no exchange runs for it) and keeps the decision it had.</param>
    public async Task<IReadOnlyList<RemotePeerInfo>> DecideAsync(NetworkMap map, IReadOnlyList<RemotePeerInfo> peers, CancellationToken cancellationToken, Func<WgKey, bool>? isIdle = null)
    {
        var account = AccountFeatures.Of(map.Settings);
        if (_provider is not { } provider)
        {
            if (_refuseAll is { } why)
            {
                // Fail closed (see the class remarks); one warning said so for all of them (ApplyAsync).
                var all = new Dictionary<WgKey, string>(peers.Count);
                foreach (var peer in peers)
                {
                    all[peer.PublicKey] = why;
                }

                Refuse(all);
                return [];
            }

            _refused = [];
            return peers;
        }

        ForgetGone(provider, peers);

        var permissive = FeatureStatusBuilder.RosenpassPermissive(_config, account);
        var rosenpass = new Dictionary<WgKey, RosenpassConfig>();
        foreach (var remote in map.RemotePeers)
        {
            if (remote.WgPubKey.Length == WgKey.Size && remote.Rosenpass is { } rp && rp.PubKeyFingerprint.Length > 0)
            {
                rosenpass[new WgKey(remote.WgPubKey.Span)] = rp;
            }
        }

        var decisions = await Task.WhenAll(peers.Select(async peer =>
        {
            rosenpass.TryGetValue(peer.PublicKey, out var rp);
            var asked = new PskPeer(peer.PublicKey, peer.Name, rp is null ? null : Convert.ToHexStringLower(rp.PubKeyFingerprint.Span), rp is null || rp.Addr.Length == 0 ? null : rp.Addr)
            {
                LocalPublicKey = _ownKey,
                AccountPresharedKey = peer.PresharedKey,
                Permissive = permissive,
            };
            if (KeptWhileIdle(peer.PublicKey, isIdle) is { } kept)
            {
                return (peer, kept);
            }

            try
            {
                var decision = await provider.GetPresharedKeyAsync(asked, cancellationToken);
                lock (_peersLock)
                {
                    _asked.Add(peer.PublicKey);
                    _idle[peer.PublicKey] = decision; // what it keeps if it goes Idle (the post-quantum mark dropped then)
                }

                return (peer, decision);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                return (peer, PskDecision.Refuse($"the PSK provider failed: {e.Message}"));
            }
        }));

        var allowed = new List<RemotePeerInfo>(peers.Count);
        var refused = new Dictionary<WgKey, string>();
        foreach (var (peer, decision) in decisions)
        {
            if (!decision.Allowed)
            {
                var reason = decision.Reason ?? "refused by the PSK provider";
                refused[peer.PublicKey] = reason;
                if (!_refused.TryGetValue(peer.PublicKey, out var before) || before != reason)
                {
                    _logger.LogWarning("Peer {Name} refused by the PSK provider ({Provider}): {Reason}; it is not connected", peer.Name, _config.Rosenpass.Provider, reason);
                }

                continue;
            }

            allowed.Add(peer with { PresharedKey = decision.PresharedKey, QuantumResistantSince = decision.QuantumResistantSince });
        }

        Refuse(refused);
        return allowed;
    }

    /// <summary>Makes <paramref name="refused"/> the refused peers; one refused before and not now leaves status (it is allowed, or gone).</summary>
    private void Refuse(Dictionary<WgKey, string> refused)
    {
        foreach (var gone in _refused.Keys.Where(k => !refused.ContainsKey(k)))
        {
            _recorder.RemovePeer(gone.ToBase64());
        }

        _refused = refused;
    }

    /// <summary>
    /// Follows lazy connections (the stats loop, every tick): a peer gone Idle is reported to the provider
    /// (<see cref="IPresharedKeyPeerLifecycle"/>), which stops exchanging with it; one woken since makes the map in force
    /// apply again (<see cref="TakeChanged"/>), so the provider is asked for it afresh.
    /// </summary>
    public void FollowIdle(Func<WgKey, bool> isIdle)
    {
        if (_provider is not { } provider)
        {
            return;
        }

        lock (_peersLock)
        {
            foreach (var peer in _asked.Where(isIdle).ToList())
            {
                _asked.Remove(peer);
                (provider as IPresharedKeyPeerLifecycle)?.PeerInactive(peer);
                _logger.LogDebug("Peer {Peer} is Idle: its PSK exchange stops", peer.ToShortString());
            }

            if (_idle.Keys.Any(peer => !_asked.Contains(peer) && !isIdle(peer)))
            {
                Interlocked.Exchange(ref _changed, 1);
            }
        }
    }

    /// <summary>
    /// Shows every refused peer in status (after the connection manager applied the allowed ones): Idle, with the
    /// provider's reason, never connected.
    /// </summary>
    public void PublishRefused(IReadOnlyList<RemotePeerInfo> peers)
    {
        foreach (var peer in peers)
        {
            if (_refused.TryGetValue(peer.PublicKey, out var reason))
            {
                _recorder.SetPeer(new PeerStatus(peer.Name, peer.Ip, peer.PublicKey.ToBase64(), PeerConnectionState.Idle, $"refused: {reason}",
                    null, null, null, null, null, null, null, 0, 0, null, false, null));
            }
        }
    }

    /// <summary>Ends the provider (the engine stops, or Rosenpass was turned off).</summary>
    public async ValueTask DisposeAsync()
    {
        if (_provider is { } provider)
        {
            _provider = null;
            provider.KeyChanged -= OnKeyChanged;
            lock (_peersLock)
            {
                _asked.Clear();
                _idle.Clear();
            }

            await provider.DisposeAsync();
            await TellRunningAsync(false, CancellationToken.None);
        }
    }

    private async Task<IPresharedKeyProvider?> EnsureProviderAsync(bool enabled, CancellationToken cancellationToken)
    {
        if (!enabled)
        {
            _missing = null;
            _missingRetried = false;
            if (_provider is not null)
            {
                _logger.LogInformation("Rosenpass off: the PSK provider {Provider} stops; peers get the account PSK", _config.Rosenpass.Provider);
                await DisposeAsync();
            }

            return null;
        }

        if (_provider is { } existing)
        {
            return existing;
        }

        var name = _config.Rosenpass.Provider;
        if (!_factories.TryGetValue(name, out var factory))
        {
            // The daemon checked a locally enabled provider at start; the account can turn Rosenpass on later.
            _missing = RosenpassAvailability.MissingProvider(name, _factories.Keys);
            _missingRetried = false;
            if (!_missingWarned)
            {
                _missingWarned = true;
                // Strict: ApplyAsync's warning says what follows (every peer refused).
                _logger.LogWarning("Rosenpass is on, but {Missing}{Effect}", _missing, _permissive ? "; peers get the account PSK (permissive)" : "");
            }

            return null;
        }

        // Admitted before the provider starts, so the first exchange message from a peer is not dropped.
        await TellRunningAsync(true, cancellationToken);
        IPresharedKeyProvider provider;
        try
        {
            provider = await factory.CreateAsync(_contextFor(name), cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // A map must still apply: permissive peers get the account PSK, strict ones are refused (ApplyAsync), and
            // the next map tries the provider again.
            await TellRunningAsync(false, cancellationToken);
            _missing = $"the PSK provider {name} could not start: {e.Message}";
            _missingRetried = true;
            _logger.LogError("The PSK provider {Provider} could not be created: {Problem}; the next network map tries again", name, e.Message);
            return null;
        }
        catch
        {
            await TellRunningAsync(false, CancellationToken.None);
            throw;
        }

        provider.KeyChanged += OnKeyChanged;
        _provider = provider;
        _missing = null;
        _missingRetried = false;
        _logger.LogInformation("Rosenpass on: every peer's PSK comes from the PSK provider {Provider}", name);
        return provider;
    }

    /// <summary>
    /// The decision an Idle peer keeps, without asking the provider (its exchange stopped): the last one, no longer
    /// post-quantum-marked; null when the peer is not Idle or was never decided (then it is asked).
    /// </summary>
    private PskDecision? KeptWhileIdle(WgKey peer, Func<WgKey, bool>? isIdle)
    {
        lock (_peersLock)
        {
            return isIdle?.Invoke(peer) == true && !_asked.Contains(peer) && _idle.TryGetValue(peer, out var last)
                ? last with { QuantumResistantSince = null }
                : null;
        }
    }

    /// <summary>Peers of the last map that this one no longer has: the provider forgets them.</summary>
    private void ForgetGone(IPresharedKeyProvider provider, IReadOnlyList<RemotePeerInfo> peers)
    {
        var present = peers.Select(p => p.PublicKey).ToHashSet();
        lock (_peersLock)
        {
            foreach (var gone in _idle.Keys.Where(k => !present.Contains(k)).ToList())
            {
                _idle.Remove(gone);
                if (_asked.Remove(gone))
                {
                    (provider as IPresharedKeyPeerLifecycle)?.PeerInactive(gone);
                }
            }
        }
    }

    /// <summary>Opens or closes the exchange's port (<see cref="ProviderRunning"/>); a firewall that fails is logged, never fatal here.</summary>
    private async Task TellRunningAsync(bool running, CancellationToken cancellationToken)
    {
        if (ProviderRunning is not { } tell)
        {
            return;
        }

        try
        {
            await tell(running, cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _logger.LogWarning("Rosenpass: the firewall could not {Action} the exchange's port: {Problem}", running ? "open" : "close", e.Message);
        }
    }

    // Raised from any thread, maybe under the provider's lock: only mark, never wait (the stats loop re-applies).
    private void OnKeyChanged(object? sender, WgKey peer) => Interlocked.Exchange(ref _changed, 1);
}
