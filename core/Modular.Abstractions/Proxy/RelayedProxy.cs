using System.Net;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;

namespace Modular.Abstractions.Proxy;

/// <summary>
/// The lifecycle every <see cref="IProxy"/> shares, so a proxy writes only how it reaches WireGuard.
/// This class owns the state checks (one relayed connection per proxy; nothing after close), starting the two
/// packet loops once, <see cref="Pause"/>/<see cref="Work"/>, raising <see cref="Disconnected"/> exactly once
/// when the relay closes (never after <see cref="CloseAsync"/>), and an idempotent close that stops both loops
/// before anything they use is released. The relay-to-WireGuard loop is <see cref="RelayedConnectionPump"/>;
/// a subclass supplies <see cref="AttachToWireGuard"/>, <see cref="SendToWireGuardAsync"/>,
/// <see cref="RunWireGuardToRelayAsync"/>, <see cref="ApplyRedirect"/> and <see cref="DetachFromWireGuard"/>.
/// </summary>
public abstract class RelayedProxy : IProxy
{
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _gate = new();
    private IRelayedConnection? _connection;
    private IPEndPoint? _endpoint;
    private WgKey _peer;
    private Task _relayToWireGuard = Task.CompletedTask;
    private Task _wireGuardToRelay = Task.CompletedTask;
    private bool _started;
    private volatile bool _paused = true;
    private int _disconnectRaised;
    private int _closed;
    private long _malformedFromRelay;
    private long _oversizedFromRelay;
    private long _bytesToWireGuard;

    /// <summary>Creates the proxy; <paramref name="logger"/> receives the lifecycle messages.</summary>
    protected RelayedProxy(ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(logger);
        Logger = logger;
    }

    /// <inheritdoc/>
    public abstract string Kind { get; }

    /// <inheritdoc/>
    public IPEndPoint EndpointAddr => _endpoint ?? throw new InvalidOperationException("Call AddRelayedConnAsync first.");

    /// <inheritdoc/>
    public event EventHandler? Disconnected;

    /// <summary>Datagrams from the relay dropped because they were not WireGuard messages (<see cref="RelayedConnectionPump.Classify"/>).</summary>
    public long MalformedFromRelay => Interlocked.Read(ref _malformedFromRelay);

    /// <summary>Datagrams from the relay dropped for being longer than <see cref="RelayedConnectionPump.MaxWireGuardMessage"/>.</summary>
    public long OversizedFromRelay => Interlocked.Read(ref _oversizedFromRelay);

    /// <inheritdoc/>
    public long? BytesToWireGuard => Interlocked.Read(ref _bytesToWireGuard);

    /// <summary>The logger given to the constructor.</summary>
    protected ILogger Logger { get; }

    /// <summary>The remote peer this proxy carries; default until <see cref="AddRelayedConnAsync"/>.</summary>
    protected WgKey RemotePeer => _peer;

    /// <summary>
    /// The relayed connection from <see cref="AddRelayedConnAsync"/> until <see cref="CloseAsync"/> begins, else null:
    /// for a proxy whose WireGuard-side datagrams arrive on a thread it does not own (a socket shared by many
    /// proxies) rather than in <see cref="RunWireGuardToRelayAsync"/>; pass it to <see cref="SendToRelayAsync"/>.
    /// </summary>
    protected IRelayedConnection? Connection => IsClosed ? null : Volatile.Read(ref _connection);

    /// <summary>True once <see cref="CloseAsync"/> began; a WireGuard-side callback then drops its datagram.</summary>
    protected bool IsClosed => Volatile.Read(ref _closed) != 0;

    /// <inheritdoc/>
    public ValueTask AddRelayedConnAsync(IRelayedConnection connection, WgKey remotePeer, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        cancellationToken.ThrowIfCancellationRequested();
        IPEndPoint endpoint;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(IsClosed, this);
            if (_connection is not null)
            {
                throw new InvalidOperationException("This proxy already carries a relayed connection; create one proxy per peer.");
            }

            endpoint = AttachToWireGuard();
            _endpoint = endpoint;
            _connection = connection;
            _peer = remotePeer;
        }

        Logger.LogDebug("{Kind} proxy for {Peer}: endpoint {Endpoint} via relay {Relay}",
            Kind, remotePeer.ToShortString(), endpoint, connection.RelayAddress);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    public void Work()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(IsClosed, this);
            if (_connection is null)
            {
                throw new InvalidOperationException("Call AddRelayedConnAsync before Work.");
            }

            _paused = false;
            if (_started)
            {
                return;
            }

            _started = true;
            var connection = _connection;
            var token = _stop.Token;
            _relayToWireGuard = Task.Run(() => RelayToWireGuardAsync(connection, token), CancellationToken.None);
            _wireGuardToRelay = Task.Run(() => RunWireGuardToRelayAsync(connection, token), CancellationToken.None);
        }
    }

    /// <inheritdoc/>
    public void Pause() => _paused = true;

    /// <summary>
    /// Makes datagrams from the relay reach WireGuard as coming from <paramref name="endpoint"/> (see
    /// <see cref="ApplyRedirect"/>; <see cref="EndpointAddr"/> returns to the normal path), then resumes
    /// forwarding like <see cref="Work"/>.
    /// </summary>
    public void RedirectAs(IPEndPoint endpoint)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ObjectDisposedException.ThrowIf(IsClosed, this);
        if (_endpoint is null)
        {
            throw new InvalidOperationException("Call AddRelayedConnAsync before RedirectAs.");
        }

        ApplyRedirect(endpoint);
        Logger.LogDebug("{Kind} proxy for {Peer}: datagrams from the relay reach WireGuard as from {Endpoint}", Kind, _peer.ToShortString(), endpoint);
        Work();
    }

    /// <inheritdoc/>
    public async ValueTask CloseAsync()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
        {
            return;
        }

        IRelayedConnection? connection;
        lock (_gate)
        {
            connection = _connection;
            _stop.Cancel();
            DetachFromWireGuard();
        }

        if (connection is not null)
        {
            try
            {
                await connection.DisposeAsync();
            }
            catch (Exception ex)
            {
                Logger.LogDebug(ex, "Closing the relayed connection of {Peer} failed", _peer.ToShortString());
            }
        }

        await Task.WhenAll(_relayToWireGuard, _wireGuardToRelay).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        OnLoopsStopped();
        _stop.Dispose();
    }

    /// <summary>Same as <see cref="CloseAsync"/>.</summary>
    public async ValueTask DisposeAsync()
    {
        await CloseAsync();
        GC.SuppressFinalize(this);
    }

    /// <summary>
    /// Connects this proxy to WireGuard (a socket, a claimed Bind endpoint) and returns what WireGuard should use
    /// as the peer's endpoint. Called once, under the proxy's lock; if it throws, nothing was added and the call
    /// may be repeated.
    /// </summary>
    protected abstract IPEndPoint AttachToWireGuard();

    /// <summary>
    /// Hands one datagram from the relay to WireGuard; only called while not paused. The datagram is valid only
    /// during the call. Delivery failures are the proxy's to count; an <see cref="OperationCanceledException"/>
    /// or <see cref="ObjectDisposedException"/> means it is stopping.
    /// </summary>
    protected abstract ValueTask SendToWireGuardAsync(ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken);

    /// <summary>
    /// The WireGuard-to-relay loop: takes what WireGuard sends to <see cref="EndpointAddr"/> and passes it to
    /// <see cref="SendToRelayAsync"/> until <paramref name="cancellationToken"/> is cancelled or
    /// <see cref="DetachFromWireGuard"/> ends its source. It keeps running while paused.
    /// </summary>
    protected abstract Task RunWireGuardToRelayAsync(IRelayedConnection connection, CancellationToken cancellationToken);

    /// <summary>Makes later relay datagrams reach WireGuard from <paramref name="endpoint"/>; called after the state checks.</summary>
    protected abstract void ApplyRedirect(IPEndPoint endpoint);

    /// <summary>
    /// Releases the WireGuard side, once, under the proxy's lock, right after the loops were told to stop and
    /// whether or not <see cref="AttachToWireGuard"/> ever ran; it must wake a loop that waits on WireGuard.
    /// </summary>
    protected abstract void DetachFromWireGuard();

    /// <summary>Runs once when both loops have ended during close: free what they used (queued buffers, senders).</summary>
    protected virtual void OnLoopsStopped()
    {
    }

    /// <summary>
    /// Sends one datagram from WireGuard over the relay. A failed send is a lost datagram (logged at debug; the
    /// relay-to-WireGuard loop notices a closed relay and reports it). Returns false when the proxy is stopping.
    /// </summary>
    // Pooled so a send that completes asynchronously costs no allocation per packet.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    protected async ValueTask<bool> SendToRelayAsync(IRelayedConnection connection, ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        try
        {
            await connection.SendAsync(datagram, cancellationToken);
            return true;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return false;
        }
        catch (Exception ex)
        {
            Logger.LogDebug(ex, "Sending to the relay of {Peer} failed", _peer.ToShortString());
            return true;
        }
    }

    private async Task RelayToWireGuardAsync(IRelayedConnection connection, CancellationToken cancellationToken)
    {
        var closed = await RelayedConnectionPump.RunAsync(
            connection,
            SendToWireGuardUnlessPaused,
            e => Logger.LogDebug(e, "Relayed connection of {Peer} failed", _peer.ToShortString()),
            CountDropped,
            cancellationToken);
        if (closed)
        {
            OnRelayClosed();
        }
    }

    private void CountDropped(RelayedDatagram kind)
    {
        var total = kind == RelayedDatagram.Oversized
            ? Interlocked.Increment(ref _oversizedFromRelay)
            : Interlocked.Increment(ref _malformedFromRelay);
        if (total == 1)
        {
            // Once per kind and proxy: a relay or peer sending garbage must not flood the log.
            Logger.LogDebug("Dropped a {Kind} datagram from the relay of {Peer} (counted from now on)", kind.ToString().ToLowerInvariant(), _peer.ToShortString());
        }
    }

    private ValueTask SendToWireGuardUnlessPaused(ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken)
    {
        if (_paused)
        {
            return ValueTask.CompletedTask;
        }

        // Counted before it is handed over: the host compares WireGuard's received bytes with these, and a count
        // that ran ahead of WireGuard's could only make a direct path look unproven for a moment, never proven.
        Interlocked.Add(ref _bytesToWireGuard, datagram.Length);
        return SendToWireGuardAsync(datagram, cancellationToken);
    }

    private void OnRelayClosed()
    {
        if (IsClosed || Interlocked.Exchange(ref _disconnectRaised, 1) != 0)
        {
            return;
        }

        Logger.LogInformation("Relayed connection of {Peer} closed", _peer.ToShortString());
        try
        {
            Disconnected?.Invoke(this, EventArgs.Empty);
        }
        catch (Exception ex)
        {
            // A subscriber's bug must not escape into the relay loop.
            Logger.LogWarning(ex, "A Disconnected handler of the {Kind} proxy for {Peer} threw", Kind, _peer.ToShortString());
        }
    }
}
