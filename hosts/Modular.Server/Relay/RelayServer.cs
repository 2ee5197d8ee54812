using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;
using Modular.Control.Relay;
using Modular.Server.Hosting;

namespace Modular.Server.Relay;

/// <summary>Relay limits.</summary>
/// <param name="MaxSessions">Bindings held at once; further binds are answered Full.</param>
/// <param name="IdleTimeout">A binding with no traffic or keepalive for this long is dropped.</param>
/// <param name="SocketBufferBytes">Kernel receive/send buffer: the only queue; the relay holds no packets itself.</param>
/// <param name="MaxSessionsPerKey">Bindings one peer key may hold, so one peer cannot exhaust the table.</param>
public sealed record RelayOptions(int MaxSessions = 65536, TimeSpan? IdleTimeout = null, int SocketBufferBytes = 8 << 20, int MaxSessionsPerKey = 1024)
{
    public TimeSpan Idle => IdleTimeout ?? TimeSpan.FromSeconds(60);
}

/// <summary>
/// UDP relay for peers with no direct path. A source authenticates by binding (its key → the remote's key)
/// with a management-issued token; datagrams from a source are forwarded, unchanged, only to the one
/// source that bound the reverse pair. Everything else is dropped and counted. One dedicated thread owns
/// every table (no locks), receives with a reused <see cref="SocketAddress"/> and forwards from the same
/// buffer: nothing is allocated per packet and the kernel socket buffer is the only queue.
/// </summary>
public sealed class RelayServer : IHostedService, IDisposable
{
    private readonly IPEndPoint _listen;
    private readonly ServerSecrets _secrets;
    private readonly TimeProvider _time;
    private readonly RelayOptions _options;
    private readonly ILogger<RelayServer> _logger;
    private readonly Dictionary<SocketAddress, Session> _bySource = [];
    private readonly Dictionary<(WgKey Own, WgKey Remote), Session> _byPair = [];
    private readonly Dictionary<WgKey, int> _perKey = [];
    private int _sessionCount;
    private Socket? _socket;
    private Thread? _thread;
    private long _forwardedPackets;
    private long _forwardedBytes;
    private long _dropped;
    private long _rejectedBinds;

    public RelayServer(IPEndPoint listen, ServerSecrets secrets, TimeProvider time, ILogger<RelayServer> logger, RelayOptions? options = null)
    {
        _listen = listen;
        _secrets = secrets;
        _time = time;
        _logger = logger;
        _options = options ?? new RelayOptions();
    }

    public IPEndPoint? LocalEndPoint => _socket?.LocalEndPoint as IPEndPoint;

    public long ForwardedPackets => Interlocked.Read(ref _forwardedPackets);

    public long ForwardedBytes => Interlocked.Read(ref _forwardedBytes);

    /// <summary>Datagrams dropped: unauthenticated or unpaired sources, malformed input.</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

    public long RejectedBinds => Interlocked.Read(ref _rejectedBinds);

    /// <summary>Bindings currently held.</summary>
    public int SessionCount => Volatile.Read(ref _sessionCount);

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _socket = UdpEndpoint.Bind(_listen, _options.SocketBufferBytes);
        // Wake up now and then even when idle, to expire stale bindings on the owning thread.
        _socket.ReceiveTimeout = 1000;
        _thread = new Thread(Run) { IsBackground = true, Name = "relay" };
        _thread.Start();
        _logger.LogInformation("Relay listening on udp {Endpoint}", LocalEndPoint);
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        _socket?.Dispose();
        _thread?.Join(TimeSpan.FromSeconds(5));
        return Task.CompletedTask;
    }

    private void Run()
    {
        var socket = _socket!;
        var from = new SocketAddress(socket.AddressFamily);
        var buffer = new byte[RelayProtocol.MaxDatagram];
        var reply = new byte[RelayProtocol.BoundSize];
        var idleTicks = (long)(_options.Idle.TotalSeconds * _time.TimestampFrequency);
        var lastSweep = _time.GetTimestamp();
        while (true)
        {
            int n;
            try
            {
                n = socket.ReceiveFrom(buffer, SocketFlags.None, from);
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.TimedOut or SocketError.WouldBlock)
            {
                n = -1;
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionReset or SocketError.MessageSize)
            {
                continue;
            }
            catch (Exception e) when (e is ObjectDisposedException or SocketException)
            {
                return;
            }

            var now = _time.GetTimestamp();
            if (n > 0)
            {
                try
                {
                    Handle(socket, buffer.AsSpan(0, n), from, reply, now);
                }
                catch (ObjectDisposedException)
                {
                    return;
                }
                catch (SocketException)
                {
                    // A send failed (e.g. the destination vanished): UDP loss.
                    Interlocked.Increment(ref _dropped);
                }
            }

            if (now - lastSweep > _time.TimestampFrequency)
            {
                Sweep(now, idleTicks);
                lastSweep = now;
            }
        }
    }

    private void Handle(Socket socket, Span<byte> datagram, SocketAddress from, byte[] reply, long now)
    {
        switch (datagram[0])
        {
            case RelayProtocol.Data:
                if (_bySource.TryGetValue(from, out var session) && session.Peer is { } peer)
                {
                    session.LastSeen = now;
                    socket.SendTo(datagram, SocketFlags.None, peer.Address);
                    Interlocked.Increment(ref _forwardedPackets);
                    Interlocked.Add(ref _forwardedBytes, datagram.Length - RelayProtocol.HeaderSize);
                }
                else
                {
                    Interlocked.Increment(ref _dropped);
                }

                break;

            case RelayProtocol.Bind when datagram.Length == RelayProtocol.BindSize:
                var status = Bind(socket, datagram, from, now);
                reply[0] = RelayProtocol.Bound;
                reply[1] = (byte)status;
                socket.SendTo(reply, SocketFlags.None, from);
                break;

            default:
                Interlocked.Increment(ref _dropped);
                break;
        }
    }

    private RelayProtocol.BindStatus Bind(Socket socket, ReadOnlySpan<byte> datagram, SocketAddress from, long now)
    {
        var own = new WgKey(datagram.Slice(1, WgKey.Size));
        var remote = new WgKey(datagram.Slice(1 + WgKey.Size, WgKey.Size));
        var token = datagram.Slice(1 + (2 * WgKey.Size), RelayToken.Size);
        if (own == remote || !RelayToken.Verify(_secrets.RelaySecret, own, token, _time.GetUtcNow()))
        {
            // An expired token ends the binding it kept alive; the agent rebinds with a fresh one from management.
            if (_bySource.TryGetValue(from, out var existing) && existing.Own == own)
            {
                Remove(existing);
            }

            Interlocked.Increment(ref _rejectedBinds);
            return RelayProtocol.BindStatus.Rejected;
        }

        if (_byPair.TryGetValue((own, remote), out var session))
        {
            if (!session.Address.Equals(from))
            {
                // The peer moved (new port or NAT rebinding): follow it.
                _bySource.Remove(session.Address);
                RemoveAt(from);
                session.Address = UdpEndpoint.Clone(from);
                _bySource[session.Address] = session;
            }
        }
        else
        {
            RemoveAt(from);
            var held = _perKey.GetValueOrDefault(own);
            if (_byPair.Count >= _options.MaxSessions || held >= _options.MaxSessionsPerKey)
            {
                return RelayProtocol.BindStatus.Full;
            }

            session = new Session(own, remote, UdpEndpoint.Clone(from));
            _byPair[(own, remote)] = session;
            _bySource[session.Address] = session;
            _perKey[own] = held + 1;
            Volatile.Write(ref _sessionCount, _byPair.Count);
        }

        session.LastSeen = now;
        if (session.Peer is null && _byPair.TryGetValue((remote, own), out var other))
        {
            session.Peer = other;
            other.Peer = session;
            // Tell the side that was waiting that data can flow now.
            Span<byte> paired = [RelayProtocol.Bound, (byte)RelayProtocol.BindStatus.Paired];
            socket.SendTo(paired, SocketFlags.None, other.Address);
        }

        return session.Peer is null ? RelayProtocol.BindStatus.Waiting : RelayProtocol.BindStatus.Paired;
    }

    private void RemoveAt(SocketAddress address)
    {
        if (_bySource.TryGetValue(address, out var previous))
        {
            Remove(previous);
        }
    }

    private void Remove(Session session)
    {
        _bySource.Remove(session.Address);
        if (_byPair.Remove((session.Own, session.Remote)))
        {
            var held = _perKey.GetValueOrDefault(session.Own) - 1;
            if (held > 0)
            {
                _perKey[session.Own] = held;
            }
            else
            {
                _perKey.Remove(session.Own);
            }

            Volatile.Write(ref _sessionCount, _byPair.Count);
        }

        if (session.Peer is { } peer)
        {
            peer.Peer = null;
            session.Peer = null;
        }
    }

    private void Sweep(long now, long idleTicks)
    {
        List<Session>? stale = null;
        foreach (var session in _byPair.Values)
        {
            if (now - session.LastSeen > idleTicks)
            {
                (stale ??= []).Add(session);
            }
        }

        foreach (var session in stale ?? [])
        {
            Remove(session);
        }
    }

    public void Dispose() => _socket?.Dispose();

    private sealed class Session(WgKey own, WgKey remote, SocketAddress address)
    {
        public WgKey Own { get; } = own;

        public WgKey Remote { get; } = remote;

        public SocketAddress Address { get; set; } = address;

        public Session? Peer { get; set; }

        public long LastSeen { get; set; }
    }
}
