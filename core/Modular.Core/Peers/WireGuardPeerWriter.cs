using System.Net;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Peers;

/// <summary>
/// The one writer of one remote peer's WireGuard configuration: every set, endpoint change and removal of that peer
/// goes through here, one at a time under the writer's own gate, and each write builds the configuration from the
/// newest map entry when it runs. So a map update racing the connect loop cannot leave older allowed IPs in
/// WireGuard: whichever write lands last was built from the newest entry, and an update that finds the peer not yet
/// set leaves it to the write that sets it.
/// </summary>
internal sealed class WireGuardPeerWriter : IDisposable
{
    private readonly IWgIface _iface;
    private readonly TimeSpan _keepalive;
    private readonly Func<bool> _keepsPathAlive;
    private readonly ILogger _logger;

    // The gate: held across one write to WireGuard and nothing else. It comes after the owner's lifecycle gate and
    // before the owner's state lock (_keepsPathAlive may take that lock under the gate, never the other way round).
    private readonly SemaphoreSlim _gate = new(1, 1);

    // Guarded by _gate.
    private RemotePeerInfo _peer; // allowed IPs and pre-shared key as the newest map entry has them
    private bool _set; // the peer is in WireGuard
    private IPEndPoint? _endpoint; // its endpoint there
    private bool _standIn; // set with a lazy stand-in endpoint and no keepalive

    /// <param name="keepsPathAlive">Whether a peer set on a real path gets the persistent keepalive now (asked under the gate).</param>
    public WireGuardPeerWriter(RemotePeerInfo peer, IWgIface iface, TimeSpan keepalive, Func<bool> keepsPathAlive, ILogger logger)
    {
        _peer = peer;
        _iface = iface;
        _keepalive = keepalive;
        _keepsPathAlive = keepsPathAlive;
        _logger = logger;
    }

    private WgKey PublicKey => _peer.PublicKey;

    /// <summary>Takes a changed map entry: a peer in WireGuard is set again in place (same endpoint, same keepalive rule).</summary>
    public async Task UpdateAsync(RemotePeerInfo peer, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            var changed = !peer.SameWireGuardConfig(_peer);
            _peer = peer;
            if (changed && _set)
            {
                // A parked peer keeps its stand-in endpoint and stays without keepalive (Config knows).
                await _iface.SetPeerAsync(Config(_endpoint), cancellationToken);
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// Sets the peer with <paramref name="standIn"/> as endpoint and no keepalive (lazy connections: traffic for it
    /// is staged in WireGuard and its handshake initiation reaches the stand-in).
    /// </summary>
    public async Task SetStandInAsync(IPEndPoint standIn, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            _standIn = true;
            _endpoint = standIn;
            await _iface.SetPeerAsync(Config(standIn), cancellationToken);
            _set = true;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Points the peer at a chosen path: the endpoint alone when it is set on a real path already, else the whole peer.</summary>
    public async Task SetEndpointAsync(IPEndPoint endpoint, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            var onStandIn = _standIn;
            _standIn = false;
            _endpoint = endpoint;
            if (_set && !onStandIn)
            {
                await _iface.UpdateEndpointAsync(PublicKey, endpoint, cancellationToken);
            }
            else
            {
                // Adding the peer with a keepalive makes WireGuard start the handshake at once. A parked peer is set
                // again, not removed: the packets WireGuard staged for it are sent once the handshake completes.
                await _iface.SetPeerAsync(Config(endpoint), cancellationToken);
                _set = true;
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Sets the peer again as it is (its keepalive as <see cref="_keepsPathAlive"/> now says); nothing when it is not set.</summary>
    public async Task RefreshAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            if (_set)
            {
                await _iface.SetPeerAsync(Config(_endpoint), cancellationToken);
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// Removes the peer and sets it anew on the same path with its keepalive, which makes WireGuard send a handshake
    /// initiation at once (see PeerConn's silence probe).
    /// </summary>
    public async Task ProbeAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            await _iface.RemovePeerAsync(PublicKey, cancellationToken);
            await _iface.SetPeerAsync(Config(_endpoint) with { PersistentKeepalive = _keepalive }, cancellationToken);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Removes the peer from WireGuard if it is there; a peer already gone is fine.</summary>
    public async Task RemoveAsync()
    {
        await _gate.WaitAsync(CancellationToken.None);
        try
        {
            var wasSet = _set;
            _set = false;
            _standIn = false;
            _endpoint = null;
            if (!wasSet)
            {
                return;
            }

            try
            {
                await _iface.RemovePeerAsync(PublicKey, CancellationToken.None);
            }
            catch (Exception e) when (e is IOException or InvalidOperationException or ObjectDisposedException)
            {
                _logger.LogDebug(e, "Peer {Peer}: WireGuard peer already gone", _peer.Name);
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>The peer's configuration from the newest map entry. Call under the gate.</summary>
    private WgPeerConfig Config(IPEndPoint? endpoint)
        => new(PublicKey, _peer.AllowedIps, endpoint, _peer.PresharedKey, !_standIn && _keepsPathAlive() ? _keepalive : null);

    public void Dispose() => _gate.Dispose();
}
