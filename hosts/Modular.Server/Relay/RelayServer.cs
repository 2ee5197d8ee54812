using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
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
/// with a Bind signed under its management-issued per-token secret (or, for one release, the old unsigned
/// form with the v1 token); datagrams from a source are forwarded, unchanged, only to the one
/// source that bound the reverse pair. Everything else is dropped and counted. One dedicated thread owns
/// every table (no locks), receives up to 32 datagrams per recvmmsg, looks sources up with a reused
/// <see cref="SocketAddress"/> and forwards them in place with one sendmmsg: nothing is allocated per
/// packet and the kernel socket buffer is the only queue.
/// </summary>
public sealed class RelayServer : IHostedService, IDisposable
{
    private readonly IPEndPoint _listen;
    private readonly ServerSecrets _secrets;
    private readonly TimeProvider _time;
    private readonly RelayOptions _options;
    private readonly ILogger _logger;
    private readonly Dictionary<SocketAddress, Session> _bySource = [];
    private readonly Dictionary<(WgKey Own, WgKey Remote), Session> _byPair = [];
    private readonly Dictionary<WgKey, int> _perKey = [];

    // The newest (expiry, counter) of signed sessions that ended, until that expiry passes: a signed Bind seen on
    // the wire cannot bring an idle pair back from another address. Bounded by MaxSessions.
    private readonly Dictionary<(WgKey Own, WgKey Remote), (long Expires, ulong Counter)> _replayFloors = [];
    private readonly ManualResetEventSlim _stopped = new();
    private int _sessionCount;
    private Socket? _socket;
    private Thread? _thread;
    private long _forwardedPackets;
    private long _forwardedBytes;
    private long _dropped;
    private long _rejectedBinds;
    private long _acceptedBinds;
    private long _receiveErrors;
    private volatile bool _stopping;

    public RelayServer(IPEndPoint listen, ServerSecrets secrets, TimeProvider time, ILogger logger, RelayOptions? options = null)
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

    /// <summary>Binds refused: bad or expired token, bad MAC, replayed counter, or the old form for a signed session.</summary>
    public long RejectedBinds => Interlocked.Read(ref _rejectedBinds);

    /// <summary>Binds (first ones and keepalives) accepted.</summary>
    public long AcceptedBinds => Interlocked.Read(ref _acceptedBinds);

    /// <summary>Receives that failed with an unexpected error (the loop goes on after a short pause).</summary>
    public long ReceiveErrors => Interlocked.Read(ref _receiveErrors);

    /// <summary>Test seam: called before each receive; a non-zero errno it returns stands in for a failed recvmmsg.</summary>
    internal Func<int>? InjectReceiveError { get; set; }

    /// <summary>Bindings currently held.</summary>
    public int SessionCount => Volatile.Read(ref _sessionCount);

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _socket = UdpEndpoint.Bind("relay", _listen, _options.SocketBufferBytes);
        // Wake up now and then even when idle, to expire stale bindings on the owning thread.
        _socket.ReceiveTimeout = 1000;
        _thread = new Thread(Run) { IsBackground = true, Name = "relay" };
        _thread.Start();
        _logger.LogInformation("Relay listening on udp {Endpoint}", LocalEndPoint);
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        if (_stopping)
        {
            return Task.CompletedTask; // stopped already (Dispose after StopAsync)
        }

        _stopping = true;
        _stopped.Set();
        try
        {
            // Wakes a thread blocked in recvmmsg at once (Linux wakes receivers even on an unconnected UDP socket).
            _socket?.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }

        _thread?.Join(TimeSpan.FromSeconds(5));
        _socket?.Dispose();
        return Task.CompletedTask;
    }

    private const int BatchSize = 32;

    private void Run()
    {
        var socket = _socket!;
        var handle = socket.SafeHandle;
        var added = false;
        try
        {
            // Hold a reference so the descriptor cannot be closed and reused while recvmmsg uses it;
            // StopAsync sets _stopping and the 1 s receive timeout brings the loop back to see it.
            handle.DangerousAddRef(ref added);
            RunBatched(socket, handle.DangerousGetHandle());
        }
        catch (ObjectDisposedException)
        {
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    private unsafe void RunBatched(Socket socket, nint fd)
    {
        const int slot = RelayProtocol.MaxDatagram;
        const int nameSize = UdpBatch.SockaddrStorageSize;
        var data = GC.AllocateArray<byte>(BatchSize * slot, pinned: true);
        var names = GC.AllocateArray<byte>(BatchSize * nameSize, pinned: true);
        var sendNames = GC.AllocateArray<byte>(BatchSize * nameSize, pinned: true);
        var iovs = GC.AllocateArray<UdpBatch.IoVec>(BatchSize, pinned: true);
        var sendIovs = GC.AllocateArray<UdpBatch.IoVec>(BatchSize, pinned: true);
        var messages = GC.AllocateArray<UdpBatch.MMsgHdr>(BatchSize, pinned: true);
        var sendMessages = GC.AllocateArray<UdpBatch.MMsgHdr>(BatchSize, pinned: true);
        // Exactly the family's sockaddr size: SocketAddress compares whole buffers, so lookups need the same length.
        var from = new SocketAddress(socket.AddressFamily);
        var reply = new byte[RelayProtocol.BoundSize];
        var idleTicks = (long)(_options.Idle.TotalSeconds * _time.TimestampFrequency);
        var lastSweep = _time.GetTimestamp();
        var receiveErrors = new ReceiveErrorPause(_logger, "Relay");

        fixed (byte* dataPtr = data, namesPtr = names, sendNamesPtr = sendNames)
        fixed (UdpBatch.IoVec* iovPtr = iovs, sendIovPtr = sendIovs)
        fixed (UdpBatch.MMsgHdr* msgPtr = messages, sendMsgPtr = sendMessages)
        {
            for (var i = 0; i < BatchSize; i++)
            {
                iovPtr[i] = new UdpBatch.IoVec { Base = dataPtr + (i * slot), Length = slot };
                msgPtr[i].Header = new UdpBatch.MsgHdr { Name = namesPtr + (i * nameSize), Iov = iovPtr + i, IovLength = 1 };
                sendMsgPtr[i].Header = new UdpBatch.MsgHdr { Name = sendNamesPtr + (i * nameSize), Iov = sendIovPtr + i, IovLength = 1 };
            }

            while (!_stopping)
            {
                for (var i = 0; i < BatchSize; i++)
                {
                    msgPtr[i].Header.NameLength = nameSize;
                    msgPtr[i].Header.Flags = 0;
                }

                var injected = InjectReceiveError?.Invoke() ?? 0;
                var received = injected != 0 ? -1 : UdpBatch.RecvMMsg(fd, msgPtr, BatchSize, UdpBatch.MsgWaitForOne, null);
                var errno = injected != 0 ? injected : received < 0 ? Marshal.GetLastPInvokeError() : 0;
                var now = _time.GetTimestamp();
                if (received < 0 && errno is not (UdpBatch.EAgain or UdpBatch.EIntr))
                {
                    if (_stopping)
                    {
                        return;
                    }

                    // An unexpected error must not end the relay for good.
                    Interlocked.Increment(ref _receiveErrors);
                    _stopped.Wait(receiveErrors.OnError($"errno {errno}"));
                    continue;
                }

                receiveErrors.OnSuccess();

                var forward = 0;
                for (var i = 0; i < received; i++)
                {
                    var length = (int)msgPtr[i].Length;
                    var nameLength = (int)msgPtr[i].Header.NameLength;
                    if (length < 1 || (msgPtr[i].Header.Flags & UdpBatch.MsgTrunc) != 0 || nameLength != from.Buffer.Length)
                    {
                        Interlocked.Increment(ref _dropped);
                        continue;
                    }

                    names.AsSpan(i * nameSize, nameLength).CopyTo(from.Buffer.Span);
                    var datagram = data.AsSpan(i * slot, length);
                    if (datagram[0] == RelayProtocol.Data)
                    {
                        if (_bySource.TryGetValue(from, out var session) && session.Peer is { } peer)
                        {
                            // Forward in place: the outgoing iovec points at the received bytes.
                            session.LastSeen = now;
                            var destination = peer.Address;
                            destination.Buffer.Span[..destination.Size].CopyTo(sendNames.AsSpan(forward * nameSize, nameSize));
                            sendMsgPtr[forward].Header.NameLength = (uint)destination.Size;
                            sendIovPtr[forward] = new UdpBatch.IoVec { Base = dataPtr + (i * slot), Length = (nuint)length };
                            forward++;
                            Interlocked.Add(ref _forwardedBytes, length - RelayProtocol.HeaderSize);
                        }
                        else
                        {
                            Interlocked.Increment(ref _dropped);
                        }

                        continue;
                    }

                    try
                    {
                        HandleControl(socket, datagram, from, reply, now);
                    }
                    catch (SocketException)
                    {
                        Interlocked.Increment(ref _dropped);
                    }
                }

                var sent = 0;
                while (sent < forward)
                {
                    var n = UdpBatch.SendMMsg(fd, sendMsgPtr + sent, (uint)(forward - sent), 0);
                    if (n > 0)
                    {
                        sent += n;
                        Interlocked.Add(ref _forwardedPackets, n);
                    }
                    else if (Marshal.GetLastPInvokeError() != UdpBatch.EIntr)
                    {
                        // This datagram cannot be sent (e.g. its destination is unreachable): UDP loss; go on with the rest.
                        sent++;
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
    }

    /// <summary>Everything that is not data: binds are answered, the rest is dropped.</summary>
    private void HandleControl(Socket socket, Span<byte> datagram, SocketAddress from, byte[] reply, long now)
    {
        if ((datagram[0] == RelayProtocol.Bind && datagram.Length == RelayProtocol.BindSize)
            || (datagram[0] == RelayProtocol.SignedBind && datagram.Length == RelayProtocol.SignedBindSize))
        {
            var status = Bind(socket, datagram, from, now);
            reply[0] = RelayProtocol.Bound;
            reply[1] = (byte)status;
            socket.SendTo(reply, SocketFlags.None, from);
        }
        else
        {
            Interlocked.Increment(ref _dropped);
        }
    }

    /// <summary>
    /// Checks a Bind and creates, follows (NAT rebinding: any source address) or extends the session. A refused
    /// Bind never touches an existing session: whoever sends it, forged or replayed, it cannot end or move one.
    /// </summary>
    private RelayProtocol.BindStatus Bind(Socket socket, ReadOnlySpan<byte> datagram, SocketAddress from, long now)
    {
        var utcNow = _time.GetUtcNow();
        WgKey own, remote;
        long expires;
        ulong counter = 0;
        var signed = datagram[0] == RelayProtocol.SignedBind;
        if (signed)
        {
            if (!RelayToken.VerifySignedBind(_secrets.RelaySecret, datagram, utcNow))
            {
                return Refuse();
            }

            (own, remote, expires, counter) = RelayProtocol.ReadSignedBind(datagram);
        }
        else
        {
            own = new WgKey(datagram.Slice(1, WgKey.Size));
            remote = new WgKey(datagram.Slice(1 + WgKey.Size, WgKey.Size));
            var token = datagram.Slice(1 + (2 * WgKey.Size), RelayToken.Size);
            if (!RelayToken.Verify(_secrets.RelaySecret, own, token, utcNow))
            {
                return Refuse();
            }

            expires = RelayToken.ExpiresOf(token);
        }

        if (own == remote)
        {
            return Refuse();
        }

        if (_byPair.TryGetValue((own, remote), out var session))
        {
            // A signed session takes only newer signed Binds: an old one seen on the wire is a replay, and the
            // old form (replayable by design) must not undo what the signature protects.
            if (session.Signed && (!signed || !IsNewer(expires, counter, session.Expires, session.Counter)))
            {
                return Refuse();
            }

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
            if (signed && _replayFloors.TryGetValue((own, remote), out var floor) && !IsNewer(expires, counter, floor.Expires, floor.Counter))
            {
                return Refuse();
            }

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
            _replayFloors.Remove((own, remote));
            Volatile.Write(ref _sessionCount, _byPair.Count);
            if (!signed)
            {
                // Once per session: the old form is accepted for one release only.
                _logger.LogWarning(
                    "Relay: peer {Peer} bound to {Remote} with the old, unsigned Bind form (replayable); accepted for this release only: upgrade that agent",
                    own.ToShortString(), remote.ToShortString());
            }
        }

        if (signed)
        {
            session.Signed = true;
            session.Counter = counter;
        }

        // A Bind with fresher credentials extends the session: it lives until the newest valid token it showed expires.
        session.Expires = Math.Max(session.Expires, expires);
        Interlocked.Increment(ref _acceptedBinds);
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

    private RelayProtocol.BindStatus Refuse()
    {
        Interlocked.Increment(ref _rejectedBinds);
        return RelayProtocol.BindStatus.Rejected;
    }

    /// <summary>(expires, counter) orders a pair's signed Binds: fresher credentials first, then the counter.</summary>
    private static bool IsNewer(long expires, ulong counter, long thanExpires, ulong thanCounter)
        => expires > thanExpires || (expires == thanExpires && counter > thanCounter);

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
            if (session.Signed)
            {
                if (_replayFloors.Count >= _options.MaxSessions)
                {
                    // Full: drop the entry held longest (Dictionary keeps insertion order while only appended to).
                    foreach (var first in _replayFloors.Keys)
                    {
                        _replayFloors.Remove(first);
                        break;
                    }
                }

                _replayFloors[(session.Own, session.Remote)] = (session.Expires, session.Counter);
            }

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

    /// <summary>Drops idle sessions and those whose newest token expired, and forgets replay floors past their expiry.</summary>
    private void Sweep(long now, long idleTicks)
    {
        var nowUnix = _time.GetUtcNow().ToUnixTimeSeconds();
        List<Session>? stale = null;
        foreach (var session in _byPair.Values)
        {
            if (now - session.LastSeen > idleTicks || session.Expires < nowUnix)
            {
                (stale ??= []).Add(session);
            }
        }

        foreach (var session in stale ?? [])
        {
            Remove(session);
        }

        List<(WgKey, WgKey)>? spent = null;
        foreach (var (pair, floor) in _replayFloors)
        {
            if (floor.Expires < nowUnix)
            {
                (spent ??= []).Add(pair);
            }
        }

        foreach (var pair in spent ?? [])
        {
            _replayFloors.Remove(pair);
        }
    }

    /// <summary>
    /// Stops as <see cref="StopAsync"/> does: when another component fails to start, the host disposes this without
    /// stopping it, and disposing the socket alone would wait forever for the receive thread to let go of it.
    /// </summary>
    public void Dispose()
    {
        StopAsync(CancellationToken.None).GetAwaiter().GetResult();
        _stopped.Dispose();
    }

    private sealed class Session(WgKey own, WgKey remote, SocketAddress address)
    {
        public WgKey Own { get; } = own;

        public WgKey Remote { get; } = remote;

        public SocketAddress Address { get; set; } = address;

        public Session? Peer { get; set; }

        public long LastSeen { get; set; }

        /// <summary>Unix seconds when the newest valid token this session showed expires; it ends then.</summary>
        public long Expires { get; set; }

        /// <summary>Bound with the signed form: only newer signed Binds are taken from now on.</summary>
        public bool Signed { get; set; }

        /// <summary>The counter of the newest signed Bind taken.</summary>
        public ulong Counter { get; set; }
    }
}
