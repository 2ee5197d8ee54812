using System.Net;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Security;
using Modular.Abstractions.WireGuard;

namespace Modular.Plugins.Rosenpass;

/// <summary>
/// The "rosenpass" PSK provider. Per peer (the precedence):
/// <list type="bullet">
/// <item>the peer runs Rosenpass too (its fingerprint is in the map): a seed PSK both sides derive from their WireGuard
/// keys and the account PSK (<see cref="SeedKeys.Seed"/>) until the first exchange completes, then the exchange's
/// output key, marked quantum-resistant since then; an expired key is ratcheted forward, never reused;</item>
/// <item>it does not, and this agent is permissive: the account PSK (or none), so the handshake still succeeds;</item>
/// <item>it does not, and this agent is strict: refused, with the reason status shows.</item>
/// </list>
/// The exchange (<see cref="IKeyExchange"/>) runs over UDP inside the tunnel; the peer with the larger WireGuard key
/// initiates. Without an exchange (none given, e.g. in tests) Rosenpass peers keep the seed PSK and are never
/// shown as quantum-resistant. Keys never reach the log.
/// </summary>
/// <remarks>
/// Locks: <see cref="_lock"/> guards the peer table and every call into the exchange (which is not thread-safe); no
/// await and no event is raised while it is held.
/// </remarks>
internal sealed class RosenpassProvider : IPresharedKeyProvider, IPresharedKeyTraffic, IPresharedKeyPeerLifecycle, IPresharedKeyProviderStatus
{
    /// <summary>What WireGuard adds to each exchange datagram in its counters: IPv4 and UDP headers, its data header and tag, padding.</summary>
    private const int TunnelOverhead = 20 + 8 + 32 + 15;

    /// <summary>The largest Rosenpass message (InitHello with its envelope) plus room.</summary>
    private const int MaxMessage = 2048;

    private readonly IKeyExchange? _exchange;
    private readonly IRosenpassTransport? _transport;
    private readonly IRosenpassKeyDirectory? _directory;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly object _lock = new();
    private readonly Dictionary<WgKey, PeerState> _peers = [];
    private readonly Dictionary<int, PeerState> _byHandle = [];
    private readonly List<Task> _loops = [];
    private TaskCompletionSource _wake = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _disposed;

    /// <param name="exchange">The protocol; null runs seed PSKs only (no transport needed then).</param>
    /// <param name="directory">Where peers' public keys come from; null: no exchange can start.</param>
    public RosenpassProvider(IKeyExchange? exchange, IRosenpassTransport? transport, IRosenpassKeyDirectory? directory, TimeProvider time, ILogger logger)
    {
        _exchange = transport is null ? null : exchange;
        _transport = transport;
        _directory = directory;
        _time = time;
        _logger = logger;
    }

    public event EventHandler<WgKey>? KeyChanged;

    /// <summary>
    /// Why no exchange runs (no exchange address, the port cannot be bound), set by the factory; null while it can run.
    /// The host shows it in status: Rosenpass not available, with this reason.
    /// </summary>
    public string? Problem { get; init; }

    /// <summary>The exchange traffic with a peer as WireGuard counts it, for the host's inactivity allowance.</summary>
    public long TrafficBytes(WgKey peer)
    {
        lock (_lock)
        {
            return _peers.TryGetValue(peer, out var state) ? state.Bytes : 0;
        }
    }

    /// <summary>
    /// Starts publishing this agent's public key (made or read by <paramref name="identity"/>, on a background thread:
    /// McEliece key generation is slow) with <paramref name="address"/>, retrying until management takes it, then the
    /// receive and timer loops (none without an exchange).
    /// </summary>
    public void Start(Func<StaticKeyPair>? identity = null, string? address = null)
    {
        if (identity is not null && address is not null && _directory is not null)
        {
            _loops.Add(Task.Run(() => PublishLoopAsync(identity, address, _stop.Token)));
        }

        if (_exchange is null || _transport is null)
        {
            return;
        }

        _loops.Add(Task.Run(() => ReceiveLoopAsync(_stop.Token)));
        _loops.Add(Task.Run(() => PollLoopAsync(_stop.Token)));
    }

    public ValueTask<PskDecision> GetPresharedKeyAsync(PskPeer peer, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (peer.RosenpassFingerprint is not { Length: > 0 } fingerprint)
        {
            Forget(peer.PublicKey);
            return ValueTask.FromResult(peer.Permissive
                ? PskDecision.Allow(peer.AccountPresharedKey)
                : PskDecision.Refuse("strict Rosenpass: this peer does not run Rosenpass (no Rosenpass key in the network map)"));
        }

        PeerState state;
        var attach = false;
        lock (_lock)
        {
            if (!_peers.TryGetValue(peer.PublicKey, out var existing) || existing.Fingerprint != fingerprint)
            {
                if (existing is not null)
                {
                    RemoveLocked(existing);
                }

                existing = new PeerState(peer.PublicKey, fingerprint, SeedKeys.Compare(peer.LocalPublicKey, peer.PublicKey) > 0);
                _peers[peer.PublicKey] = existing;
            }

            state = existing;

            state.Endpoint = ParseEndpoint(peer.RosenpassAddress) ?? state.Endpoint;
            state.AccountPsk = peer.AccountPresharedKey;
            if (_exchange is not null && _directory is not null && state.Handle is null && !state.Attaching)
            {
                state.Attaching = attach = true;
            }

            if (state.Key is { } key)
            {
                return ValueTask.FromResult(PskDecision.Allow(key) with { QuantumResistantSince = state.Since });
            }
        }

        if (attach)
        {
            _ = AttachAsync(state);
        }

        return ValueTask.FromResult(PskDecision.Allow(SeedKeys.Seed(peer.LocalPublicKey, peer.PublicKey, peer.AccountPresharedKey)));
    }

    /// <summary>The peer left the map or went Idle: its exchange stops and its key, handle and counters are forgotten.</summary>
    public void PeerInactive(WgKey peer) => Forget(peer);

    /// <summary>Whether the provider holds state (and so runs an exchange) for <paramref name="peer"/>.</summary>
    internal bool Knows(WgKey peer)
    {
        lock (_lock)
        {
            return _peers.ContainsKey(peer);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _stop.CancelAsync();
        _transport?.Dispose();
        try
        {
            await Task.WhenAll(_loops);
        }
        catch (OperationCanceledException)
        {
            // the loops end by cancellation
        }

        _stop.Dispose();
    }

    private async Task PublishLoopAsync(Func<StaticKeyPair> identity, string address, CancellationToken cancellationToken)
    {
        var keys = identity();
        var fingerprint = keys.Fingerprint();
        var delay = TimeSpan.FromSeconds(2);
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                await _directory!.PublishAsync(keys.PublicKey, fingerprint, address, cancellationToken);
                _logger.LogInformation("Rosenpass: published this agent's public key ({Bytes} bytes) with its exchange address {Address}", keys.PublicKey.Length, address);
                return;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                _logger.LogDebug("Rosenpass: publishing the public key failed ({Problem}); retrying in {Delay}", e.Message, delay);
            }

            await Task.Delay(delay, _time, cancellationToken);
            delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromMinutes(1).Ticks));
        }
    }

    /// <summary>Fetches the peer's public key (once; the host caches it) and adds it to the exchange.</summary>
    private async Task AttachAsync(PeerState state)
    {
        try
        {
            var publicKey = await _directory!.GetAsync(Convert.FromHexString(state.Fingerprint), _stop.Token);
            lock (_lock)
            {
                state.Attaching = false;
                if (publicKey is null || !ReferenceEquals(_peers.GetValueOrDefault(state.WireGuardKey), state))
                {
                    return;
                }

                state.Handle = _exchange!.AddPeer(publicKey, state.AccountPsk?.ToArray());
                _byHandle[state.Handle.Value] = state;
            }

            if (publicKey is null)
            {
                _logger.LogWarning("Rosenpass: no public key for peer {Peer}'s fingerprint; it keeps the seed PSK", state.WireGuardKey.ToShortString());
            }

            Wake();
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            lock (_lock)
            {
                state.Attaching = false; // tried again on the next map
            }

            _logger.LogWarning("Rosenpass: fetching peer {Peer}'s public key failed: {Problem}", state.WireGuardKey.ToShortString(), e.Message);
        }
        catch (OperationCanceledException)
        {
            // stopping
        }
    }

    private async Task ReceiveLoopAsync(CancellationToken cancellationToken)
    {
        var input = new byte[MaxMessage];
        var output = new byte[MaxMessage];
        while (!cancellationToken.IsCancellationRequested)
        {
            int length;
            IPEndPoint from;
            try
            {
                (length, from) = await _transport!.ReceiveAsync(input, cancellationToken);
            }
            catch (Exception e) when (e is ObjectDisposedException or OperationCanceledException)
            {
                return;
            }
            catch (System.Net.Sockets.SocketException e)
            {
                _logger.LogDebug("Rosenpass: receive failed: {Problem}", e.Message);
                continue;
            }

            KeyExchangeResult result;
            WgKey? exchanged = null;
            lock (_lock)
            {
                CountLocked(from.Address, length);
                try
                {
                    result = _exchange!.HandleMessage(input.AsSpan(0, length), output);
                }
#pragma warning disable CA1031 // A message the protocol rejects (truncated, replayed, forged) is dropped, whatever it throws.
                catch (Exception e)
#pragma warning restore CA1031
                {
                    _logger.LogDebug("Rosenpass: dropped a {Length}-byte message from {From}: {Problem}", length, from, e.Message);
                    continue;
                }

                if (result.ExchangedWith is { } handle && _byHandle.TryGetValue(handle, out var state))
                {
                    state.Key = new WgKey(_exchange.OutputKey(handle));
                    state.Since ??= _time.GetUtcNow();
                    exchanged = state.WireGuardKey;
                }

                if (result.ResponseLength > 0)
                {
                    CountLocked(from.Address, result.ResponseLength);
                }
            }

            if (result.ResponseLength > 0)
            {
                await SendAsync(output.AsMemory(0, result.ResponseLength), from, cancellationToken);
            }

            if (exchanged is { } peer)
            {
                KeyChanged?.Invoke(this, peer);
            }
        }
    }

    private async Task PollLoopAsync(CancellationToken cancellationToken)
    {
        var output = new byte[MaxMessage];
        while (!cancellationToken.IsCancellationRequested)
        {
            Task woken;
            PollResult poll;
            IPEndPoint? to = null;
            var length = 0;
            WgKey? ratcheted = null;
            var idle = TimeSpan.Zero;
            lock (_lock)
            {
                woken = _wake.Task;
                poll = _exchange!.Poll();
                _byHandle.TryGetValue(poll.Peer, out var state);
                switch (poll.Action)
                {
                    case PollAction.Sleep:
                        idle = poll.Wait;
                        break;
                    case PollAction.SendInitiation when state is { Initiator: true, Endpoint: { } endpoint }:
                        length = _exchange.InitiateHandshake(poll.Peer, output);
                        to = endpoint;
                        break;
                    case PollAction.SendRetransmission when state is { Endpoint: { } endpoint }:
                        length = _exchange.RetransmitHandshake(poll.Peer, output);
                        to = endpoint;
                        break;
                    case PollAction.DeleteKey when state is { Key: { } old }:
                        // Expired with no fresh key: step it forward, never reuse it; the exchange keeps trying.
                        state.Key = SeedKeys.Ratchet(old);
                        ratcheted = state.WireGuardKey;
                        break;
                    default:
                        // The responder of a pair (or a peer without an address yet): the other side initiates.
                        idle = TimeSpan.FromSeconds(1);
                        break;
                }

                if (to is not null)
                {
                    CountLocked(to.Address, length);
                }
            }

            if (to is not null && length > 0)
            {
                await SendAsync(output.AsMemory(0, length), to, cancellationToken);
            }

            if (ratcheted is { } peer)
            {
                KeyChanged?.Invoke(this, peer);
            }

            if (idle > TimeSpan.Zero)
            {
                await Task.WhenAny(Task.Delay(idle, _time, cancellationToken), woken);
            }
        }
    }

    private async Task SendAsync(ReadOnlyMemory<byte> datagram, IPEndPoint to, CancellationToken cancellationToken)
    {
        try
        {
            await _transport!.SendAsync(datagram, to, cancellationToken);
        }
        catch (Exception e) when (e is System.Net.Sockets.SocketException or IOException)
        {
            _logger.LogDebug("Rosenpass: sending to {To} failed: {Problem}", to, e.Message);
        }
    }

    /// <summary>Makes the timer loop poll the exchange now (a peer was added).</summary>
    internal void Wake()
    {
        TaskCompletionSource wake;
        lock (_lock)
        {
            wake = _wake;
            _wake = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        wake.TrySetResult();
    }

    private void Forget(WgKey peer)
    {
        lock (_lock)
        {
            if (_peers.TryGetValue(peer, out var state))
            {
                RemoveLocked(state);
            }
        }
    }

    private void RemoveLocked(PeerState state)
    {
        _peers.Remove(state.WireGuardKey);
        if (state.Handle is { } handle)
        {
            _byHandle.Remove(handle);
            _exchange?.RemovePeer(handle);
        }
    }

    // Exchange traffic goes through the tunnel: counted per peer (by its overlay address) for the inactivity allowance.
    private void CountLocked(IPAddress address, int bytes)
    {
        foreach (var state in _peers.Values)
        {
            if (state.Endpoint is { } endpoint && endpoint.Address.Equals(address))
            {
                state.Bytes += bytes + TunnelOverhead;
                return;
            }
        }
    }

    private static IPEndPoint? ParseEndpoint(string? address)
        => address is not null && IPEndPoint.TryParse(address, out var endpoint) && endpoint.Port != 0 ? endpoint : null;

    /// <summary>One Rosenpass peer; every field under <see cref="_lock"/>.</summary>
    private sealed class PeerState(WgKey wireGuardKey, string fingerprint, bool initiator)
    {
        public WgKey WireGuardKey { get; } = wireGuardKey;

        public string Fingerprint { get; } = fingerprint;

        /// <summary>This agent has the larger WireGuard key: it starts each exchange.</summary>
        public bool Initiator { get; } = initiator;

        public IPEndPoint? Endpoint { get; set; }

        public WgKey? AccountPsk { get; set; }

        public int? Handle { get; set; }

        public bool Attaching { get; set; }

        /// <summary>The PSK from the exchange (ratcheted on expiry); null before the first exchange.</summary>
        public WgKey? Key { get; set; }

        public DateTimeOffset? Since { get; set; }

        public long Bytes { get; set; }
    }
}
