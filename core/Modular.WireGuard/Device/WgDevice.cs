using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Noise;
using Modular.WireGuard.Routing;
using Modular.WireGuard.Tun;

namespace Modular.WireGuard.Device;

/// <summary>
/// An in-process WireGuard interface (the counterpart of wireguard-go's device.Device): moves
/// packets between an <see cref="ITun"/> and an <see cref="IBind"/>, encrypting with the Noise
/// sessions of its peers. One dedicated thread reads the TUN and one per receive function reads
/// the bind; each processes whole batches inline, which keeps every peer's packets in order.
/// Configure it with the typed methods or the UAPI text (<see cref="IpcSet"/>/<see cref="IpcGet"/>).
/// This file holds its state, lifecycle and typed configuration; the data path is in
/// WgDevice.Send.cs, WgDevice.Receive.cs and WgDevice.Handshake.cs, the UAPI in WgDevice.Uapi.cs.
/// </summary>
public sealed partial class WgDevice : IDisposable
{
    private readonly ITun _tun;
    private readonly HookableBind _bind;
    private readonly ILogger _logger;
    private readonly ILoggerFactory _loggerFactory;
    private readonly TimeProvider _time;
    private readonly Lock _stateLock = new();
    private readonly ConcurrentDictionary<WgKey, Peer> _peers = new();
    private readonly AllowedIps<Peer> _allowedIps = new();
    private readonly SourceRateLimiter _rateLimiter;
    private readonly Lock _loadLock = new();
    private readonly List<Thread> _receiveThreads = [];
    private volatile StaticIdentity? _identity;
    private volatile CookieChecker? _cookieChecker;
    private WgKey _privateKey;
    private WgKey _publicKey;
    private ushort _listenPort;
    private ushort _boundPort;
    private uint _fwmark;
    private volatile bool _up;
    private volatile bool _disposed;
    private Thread? _tunThread;
    private BlockingCollection<HandshakeWork>? _handshakeQueue;
    private Thread? _handshakeThread;
    private int _closedRaised;
    private long _loadWindowStart;
    private int _loadWindowCount;
    private long _underLoadUntil;
    private IPacketFilter? _packetFilter;

    public WgDevice(ITun tun, IBind bind, ILoggerFactory loggerFactory, TimeProvider time)
    {
        _tun = tun;
        _bind = bind as HookableBind ?? new HookableBind(bind);
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<WgDevice>();
        _time = time;
        _rateLimiter = new SourceRateLimiter(time);
        _loadWindowStart = time.GetTimestamp();
    }

    /// <summary>Raised once when the TUN read loop ends because the TUN device is gone (or the device was disposed).</summary>
    public event EventHandler? Closed;

    /// <summary>The Bind-level hook for the bind proxy and lazy connections.</summary>
    public IWgBindHook BindHook => _bind;

    /// <summary>Filters every packet crossing the device (e.g. the stateful firewall); null: everything passes. Changeable while running.</summary>
    public IPacketFilter? PacketFilter
    {
        get => Volatile.Read(ref _packetFilter);
        set => Volatile.Write(ref _packetFilter, value);
    }

    public bool IsUp => _up;

    /// <summary>Our public key; zero until a private key is set.</summary>
    public WgKey PublicKey
    {
        get
        {
            lock (_stateLock)
            {
                return _publicKey;
            }
        }
    }

    /// <summary>The UDP port: the one bound while up, else the configured one.</summary>
    public ushort ListenPort
    {
        get
        {
            lock (_stateLock)
            {
                return _up ? _boundPort : _listenPort;
            }
        }
    }

    public uint Fwmark
    {
        get
        {
            lock (_stateLock)
            {
                return _fwmark;
            }
        }
    }

    /// <summary>
    /// How many handshake messages per second the device takes before it is "under load" and
    /// demands cookies (mac2) and rate-limits initiations per source address.
    /// </summary>
    public int UnderLoadHandshakesPerSecond { get; set; } = 128;

    internal StaticIdentity? Identity => _identity;

    internal IndexTable Indices { get; } = new();

    internal TimeProvider Time => _time;

    internal Peer? FindPeer(WgKey publicKey) => _peers.GetValueOrDefault(publicKey);

    /// <summary>Packets dropped on the data path (no route, no endpoint, bad authentication, disallowed source...).</summary>
    public long DroppedPackets => Interlocked.Read(ref _dropped);

    private long _dropped;

    public void Up()
    {
        lock (_stateLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_up)
            {
                return;
            }

            var queue = new BlockingCollection<HandshakeWork>(HandshakeQueueCapacity);
            _handshakeQueue = queue;
            _handshakeThread = new Thread(() => HandshakeLoop(queue)) { IsBackground = true, Name = $"wg-hs-{_tun.Name}" };
            _handshakeThread.Start();
            try
            {
                OpenBindLocked(_listenPort);
            }
            catch
            {
                StopHandshakeWorkerLocked();
                throw;
            }

            _up = true;
            if (_tunThread is null)
            {
                _tunThread = new Thread(TunReadLoop) { IsBackground = true, Name = $"wg-tun-{_tun.Name}" };
                _tunThread.Start();
            }

            foreach (var peer in _peers.Values)
            {
                peer.Start();
            }
        }

        _logger.LogInformation("WireGuard device {Name} up on UDP port {Port}", _tun.Name, ListenPort);
    }

    public void Down()
    {
        lock (_stateLock)
        {
            if (!_up)
            {
                return;
            }

            _up = false;
            foreach (var peer in _peers.Values)
            {
                peer.Stop();
            }

            CloseBindLocked();
            StopHandshakeWorkerLocked();
        }

        _logger.LogInformation("WireGuard device {Name} down", _tun.Name);
    }

    public void SetPrivateKey(WgKey privateKey)
    {
        lock (_stateLock)
        {
            if (privateKey == _privateKey)
            {
                return;
            }

            _privateKey = privateKey;
            if (privateKey.IsZero)
            {
                _identity = null;
                _cookieChecker = null;
                _publicKey = default;
            }
            else
            {
                Span<byte> raw = stackalloc byte[32];
                privateKey.CopyTo(raw);
                var identity = new StaticIdentity(raw);
                raw.Clear();
                _publicKey = new WgKey(identity.PublicKey);
                _cookieChecker = new CookieChecker(identity.PublicKey, _time);
                _identity = identity;
                if (_peers.ContainsKey(_publicKey))
                {
                    RemovePeerLocked(_publicKey);
                }
            }

            foreach (var peer in _peers.Values)
            {
                lock (peer.Handshake.Lock)
                {
                    peer.Handshake.ComputeStaticStatic(_identity);
                }

                peer.ZeroKeys();
            }
        }
    }

    public void SetListenPort(ushort port)
    {
        lock (_stateLock)
        {
            if (_up)
            {
                var previous = _listenPort;
                CloseBindLocked();
                try
                {
                    OpenBindLocked(port);
                }
                catch
                {
                    // Stay reachable on the old port rather than losing the socket altogether.
                    OpenBindLocked(previous);
                    throw;
                }
            }

            _listenPort = port;
        }
    }

    /// <summary>The firewall mark for the UDP sockets, applied by a bind that supports one (<see cref="IBindWithMark"/>); IOException when refused.</summary>
    public void SetFwmark(uint mark)
    {
        lock (_stateLock)
        {
            _bind.SetMark(mark);
            _fwmark = mark;
        }
    }

    /// <summary>Adds the peer or replaces its configuration (allowed IPs are replaced; a null endpoint keeps a learnt one).</summary>
    public void SetPeer(WgPeerConfig config)
    {
        lock (_stateLock)
        {
            var peer = GetOrCreatePeerLocked(config.PublicKey);
            _createdInThisSet.Clear();
            if (peer is null)
            {
                return;
            }

            SetPresharedKey(peer, config.PresharedKey ?? default);
            if (config.Endpoint is not null)
            {
                peer.Endpoint = WgEndpoint.FromIPEndPoint(config.Endpoint);
            }

            _allowedIps.RemoveAll(peer);
            foreach (var prefix in config.AllowedIps)
            {
                _allowedIps.Insert(IPPrefix.Canonical(prefix.BaseAddress, prefix.PrefixLength), peer);
            }

            SetPersistentKeepaliveLocked(peer, config.PersistentKeepalive ?? TimeSpan.Zero);
        }
    }

    public bool RemovePeer(WgKey publicKey)
    {
        lock (_stateLock)
        {
            return RemovePeerLocked(publicKey);
        }
    }

    public void RemoveAllPeers()
    {
        lock (_stateLock)
        {
            foreach (var key in _peers.Keys.ToList())
            {
                RemovePeerLocked(key);
            }
        }
    }

    /// <summary>Counters of every peer, keyed by public key.</summary>
    public IReadOnlyDictionary<WgKey, WgPeerStats> GetPeerStats()
    {
        var stats = new Dictionary<WgKey, WgPeerStats>();
        foreach (var (key, peer) in _peers)
        {
            var endpoint = peer.Endpoint;
            stats[key] = new WgPeerStats(peer.LastHandshake, peer.RxBytes, peer.TxBytes, endpoint.IsEmpty ? null : endpoint.ToIPEndPoint());
        }

        return stats;
    }

    /// <summary>The allowed IPs of one peer (empty for an unknown peer).</summary>
    public IReadOnlyList<IPNetwork> GetAllowedIps(WgKey publicKey)
        => _peers.TryGetValue(publicKey, out var peer) ? _allowedIps.PrefixesOf(peer) : [];

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        Down();
        lock (_stateLock)
        {
            _disposed = true;
            foreach (var key in _peers.Keys.ToList())
            {
                RemovePeerLocked(key);
            }
        }

        _tun.Dispose();
        _bind.Dispose();
        var tunThread = _tunThread;
        if (tunThread is not null && tunThread != Thread.CurrentThread)
        {
            tunThread.Join(TimeSpan.FromSeconds(5));
        }

        RaiseClosed();
    }

    // ---- configuration helpers (caller holds _stateLock) ----

    private Peer? GetOrCreatePeerLocked(WgKey publicKey)
    {
        if (_peers.TryGetValue(publicKey, out var existing))
        {
            return existing;
        }

        if (publicKey.IsZero || (!_publicKey.IsZero && publicKey == _publicKey))
        {
            _logger.LogDebug("Ignoring a peer with a zero key or our own public key");
            return null;
        }

        var peer = new Peer(this, publicKey, _time, _loggerFactory.CreateLogger<Peer>());
        peer.Handshake.ComputeStaticStatic(_identity);
        _peers[publicKey] = peer;
        _createdInThisSet.Add(peer);
        if (_up)
        {
            peer.Start();
        }

        return peer;
    }

    private bool RemovePeerLocked(WgKey publicKey)
    {
        if (!_peers.TryRemove(publicKey, out var peer))
        {
            return false;
        }

        _allowedIps.RemoveAll(peer);
        peer.Dispose();
        return true;
    }

    private static void SetPresharedKey(Peer peer, WgKey presharedKey)
    {
        lock (peer.Handshake.Lock)
        {
            presharedKey.CopyTo(peer.Handshake.PresharedKey);
        }
    }

    private void SetPersistentKeepaliveLocked(Peer peer, TimeSpan interval)
    {
        var wasOff = peer.PersistentKeepalive <= TimeSpan.Zero;
        peer.PersistentKeepalive = interval;
        if (interval <= TimeSpan.Zero)
        {
            peer.PersistentKeepaliveTimer.Stop();
        }
        else if (wasOff && _up && peer.IsRunning)
        {
            peer.SendKeepalive();
        }
    }

    private void OpenBindLocked(ushort port)
    {
        var receivers = _bind.Open(port, out var actual);
        _boundPort = actual;
        foreach (var receive in receivers)
        {
            var thread = new Thread(() => ReceiveLoop(receive)) { IsBackground = true, Name = $"wg-rx-{_tun.Name}" };
            _receiveThreads.Add(thread);
            thread.Start();
        }
    }

    private void CloseBindLocked()
    {
        _bind.Close();
        foreach (var thread in _receiveThreads)
        {
            if (thread != Thread.CurrentThread)
            {
                thread.Join(TimeSpan.FromSeconds(5));
            }
        }

        _receiveThreads.Clear();
    }

    private void StopHandshakeWorkerLocked()
    {
        var queue = _handshakeQueue;
        _handshakeQueue = null;
        queue?.CompleteAdding();
        if (_handshakeThread is { } thread && thread != Thread.CurrentThread)
        {
            thread.Join(TimeSpan.FromSeconds(5));
        }

        _handshakeThread = null;
    }

    private void RaiseClosed()
    {
        if (Interlocked.Exchange(ref _closedRaised, 1) == 0)
        {
            Closed?.Invoke(this, EventArgs.Empty);
        }
    }

    private void CountDrop() => Interlocked.Increment(ref _dropped);
}
