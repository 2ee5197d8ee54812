using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Peers;

/// <summary>
/// Holds one peer connection's relayed path: binds at the relay (with its proxy), waits briefly for the peer to bind
/// there too when this side starts the handshake, notices the relay connection closing, and closes the path. At most
/// one path at a time; WireGuard's endpoint is the owner's to set (through its writer).
/// </summary>
internal sealed class RelayedPathHolder
{
    /// <summary>How often the pairing wait asks the relay whether the peer bound there too.</summary>
    private static readonly TimeSpan PairingPoll = TimeSpan.FromMilliseconds(20);

    private readonly WgKey _publicKey;
    private readonly Func<string> _name;
    private readonly IRelayConnector _relay;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Action _wake;

    // The owner's state lock (PeerConn._lock), shared so status reads the path with the rest of the connection.
    private readonly Lock _lock;

    // Guarded by _lock.
    private RelayedPath? _path; // the relay binding and its proxy, while relayed
    private bool _lost; // the relay connection of _path closed

    /// <param name="stateLock">The owner's state lock; this holder's fields are guarded by it.</param>
    /// <param name="wake">Wakes the owner's connect loop when the relay connection closes (called outside the lock).</param>
    public RelayedPathHolder(WgKey publicKey, Func<string> name, IRelayConnector relay, TimeProvider time, ILogger logger, Lock stateLock, Action wake)
    {
        _publicKey = publicKey;
        _name = name;
        _relay = relay;
        _time = time;
        _logger = logger;
        _lock = stateLock;
        _wake = wake;
    }

    /// <summary>The relayed path, null while none is held.</summary>
    public RelayedPath? Path
    {
        get
        {
            lock (_lock)
            {
                return _path;
            }
        }
    }

    /// <summary>The relay connection of the held path closed.</summary>
    public bool Lost
    {
        get
        {
            lock (_lock)
            {
                return _lost;
            }
        }
    }

    /// <summary>
    /// Binds at the relay and starts the proxy. When <paramref name="startsHandshake"/> and the relay can tell, waits
    /// (at most <see cref="PeerConnOptions.PairingWait"/> on the injected clock) until the peer bound there too.
    /// </summary>
    public async Task<RelayedPath> ConnectAsync(bool startsHandshake, CancellationToken cancellationToken)
    {
        var path = await _relay.ConnectAsync(_publicKey, cancellationToken);
        lock (_lock)
        {
            _path = path;
            _lost = false;
        }

        path.Proxy.Disconnected += OnDisconnected;

        path.Proxy.Work();
        if (startsHandshake && path.IsPaired is { } isPaired)
        {
            // The relay drops what arrives before the peer bound there too: an initiation sent now would be lost and
            // WireGuard would retry only 5 s later. Wait (briefly, bounded) until the relay says both sides are bound.
            var until = _time.GetUtcNow() + PeerConnOptions.PairingWait;
            while (!isPaired() && _time.GetUtcNow() < until)
            {
                await Task.Delay(PairingPoll, _time, cancellationToken);
            }
        }

        return path;
    }

    /// <summary>Closes the held path's proxy, if any; a proxy failing to close is logged.</summary>
    public async Task CloseAsync()
    {
        RelayedPath? path;
        lock (_lock)
        {
            path = _path;
            _path = null;
        }

        if (path is null)
        {
            return;
        }

        path.Proxy.Disconnected -= OnDisconnected;
        try
        {
            await path.Proxy.CloseAsync();
        }
#pragma warning disable CA1031 // A plugin's failure to close is logged; the connection goes on.
        catch (Exception e)
#pragma warning restore CA1031
        {
            _logger.LogWarning(e, "Peer {Peer}: closing the {Proxy} proxy failed", _name(), path.Proxy.Kind);
        }
    }

    private void OnDisconnected(object? sender, EventArgs e)
    {
        lock (_lock)
        {
            _lost = true;
        }

        _wake();
    }
}
