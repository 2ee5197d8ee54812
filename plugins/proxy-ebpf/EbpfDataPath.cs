using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.ComponentModel;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;

namespace Modular.Plugins.ProxyEbpf;

/// <summary>
/// The eBPF proxy's data path for one WireGuard listen port: ONE UDP socket on 127.0.0.1 for every relayed peer, and
/// the tc program of bpf/wgproxy.c attached to lo's ingress (tcx) that rewrites UDP ports so that each peer reaches
/// WireGuard from its own endpoint 127.0.0.1:&lt;peer port&gt; (no socket per peer; see the C source for the rules).
/// The program's two maps are keyed by nothing but what it needs: <c>config</c> (the socket's and WireGuard's ports)
/// and <c>peers</c> (the peer ports in use), an entry added and removed with each relayed connection. The program,
/// its maps and the link are file descriptors of this process: <see cref="Dispose"/> detaches and frees them, and so
/// does the kernel if the agent dies, so a killed agent leaves nothing on lo for the next start to clean.
/// Create it in the network namespace of the WireGuard it serves.
/// </summary>
internal sealed class EbpfDataPath : IDisposable
{
    /// <summary>The section of the object file holding the program.</summary>
    public const string ProgramSection = "tc";

    /// <summary>The program's name, as `bpftool prog` shows it.</summary>
    public const string ProgramName = "modular_wgproxy";

    /// <summary>Relayed peers one data path carries at most (the peers map's size).</summary>
    public const int MaxPeers = 16384;

    private const int BufferBytes = 4 << 20;
    private const ushort FirstPeerPort = 20000;
    private const ushort LastPeerPort = 60999;

    private readonly ILogger _logger;
    private readonly SafeFileHandle _configMap;
    private readonly SafeFileHandle _peersMap;
    private readonly SafeFileHandle _program;
    private readonly SafeFileHandle _link;
    private readonly Socket _socket;
    private readonly ConcurrentDictionary<ushort, EbpfProxy> _byPort = new();
    private readonly Lock _lock = new();
    private readonly Queue<ushort> _freed = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _receiving;
    private ushort _nextPort = FirstPeerPort;
    private long _dropped;

    private EbpfDataPath(int wireGuardPort, ILogger logger, SafeFileHandle configMap, SafeFileHandle peersMap, SafeFileHandle program, SafeFileHandle link, Socket socket)
    {
        WireGuardPort = wireGuardPort;
        _logger = logger;
        _configMap = configMap;
        _peersMap = peersMap;
        _program = program;
        _link = link;
        _socket = socket;
        Port = ((IPEndPoint)socket.LocalEndPoint!).Port;
        _receiving = Task.Run(ReceiveLoopAsync);
    }

    /// <summary>The port WireGuard listens on.</summary>
    public int WireGuardPort { get; }

    /// <summary>The proxy socket's port on 127.0.0.1.</summary>
    public int Port { get; }

    /// <summary>Relayed peers carried now.</summary>
    public int Peers => _byPort.Count;

    /// <summary>Datagrams dropped on the socket: not from a peer port the program rewrote.</summary>
    public long DatagramsDropped => Interlocked.Read(ref _dropped);

    /// <summary>
    /// Loads the program from <paramref name="objectPath"/>, creates its maps and the proxy socket, and attaches it to
    /// lo. Throws with the reason (file missing, verifier refusal, no tcx on this kernel, no privilege); nothing stays
    /// behind on failure.
    /// </summary>
    public static EbpfDataPath Open(string objectPath, int wireGuardPort, ILogger logger)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(wireGuardPort, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(wireGuardPort, 65535);
        BpfObject code;
        try
        {
            code = BpfObject.Read(File.ReadAllBytes(objectPath), ProgramSection);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            throw new InvalidOperationException($"cannot read the eBPF program {objectPath}: {e.Message}", e);
        }

        var owned = new List<IDisposable>();
        try
        {
            var configMap = Own(owned, Bpf.CreateMap(Bpf.MapTypeArray, 4, 4, 1, "modular_cfg"));
            var peersMap = Own(owned, Bpf.CreateMap(Bpf.MapTypeHash, 4, 1, MaxPeers, "modular_peers"));
            code.BindMap("config", (int)configMap.DangerousGetHandle());
            code.BindMap("peers", (int)peersMap.DangerousGetHandle());
            var program = Own(owned, Bpf.LoadProgram(Bpf.ProgTypeSchedCls, Bpf.AttachTcxIngress, code.Instructions, code.License, ProgramName));

            var socket = Own(owned, new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));
            TrySetBuffers(socket, logger);
            socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            var port = ((IPEndPoint)socket.LocalEndPoint!).Port;

            // The program does nothing until its config says which ports are ours: write it before attaching.
            Span<byte> config = stackalloc byte[4];
            BinaryPrimitives.WriteUInt16BigEndian(config, (ushort)port);
            BinaryPrimitives.WriteUInt16BigEndian(config[2..], (ushort)wireGuardPort);
            Bpf.Update(configMap, [0, 0, 0, 0], config);

            var link = Own(owned, Bpf.CreateLink(program, Bpf.InterfaceIndex("lo"), Bpf.AttachTcxIngress));
            logger.LogInformation("eBPF proxy: program {Program} attached to lo (tcx ingress); one socket on 127.0.0.1:{Port} for WireGuard port {WireGuardPort}",
                ProgramName, port, wireGuardPort);
            return new EbpfDataPath(wireGuardPort, logger, configMap, peersMap, program, link, socket);
        }
        catch (Exception e) when (e is Win32Exception or SocketException or InvalidDataException or PlatformNotSupportedException or EntryPointNotFoundException or DllNotFoundException)
        {
            for (var i = owned.Count - 1; i >= 0; i--)
            {
                owned[i].Dispose();
            }

            throw new InvalidOperationException(e.Message, e);
        }
    }

    /// <summary>Gives <paramref name="proxy"/> its own peer port and tells the program; returns WireGuard's endpoint for the peer.</summary>
    public IPEndPoint Register(EbpfProxy proxy)
    {
        lock (_lock)
        {
            if (_byPort.Count >= MaxPeers)
            {
                throw new InvalidOperationException($"the eBPF proxy carries {MaxPeers} relayed peers already");
            }

            var port = RentPort();
            Bpf.Update(_peersMap, PeerKey(port), [1]);
            _byPort[port] = proxy;
            return new IPEndPoint(IPAddress.Loopback, port);
        }
    }

    /// <summary>Forgets <paramref name="port"/>: the program stops rewriting it.</summary>
    public void Unregister(ushort port)
    {
        lock (_lock)
        {
            if (!_byPort.TryRemove(port, out _))
            {
                return;
            }

            try
            {
                Bpf.Delete(_peersMap, PeerKey(port));
            }
            catch (Win32Exception e)
            {
                _logger.LogDebug("eBPF proxy: removing peer port {Port} from the map failed: {Error}", port, e.Message);
            }

            _freed.Enqueue(port);
        }
    }

    /// <summary>Sends <paramref name="datagram"/> to <paramref name="peer"/>'s endpoint; the program turns it into a datagram to WireGuard from there.</summary>
    public void Send(SocketAddress peer, ReadOnlySpan<byte> datagram) => _socket.SendTo(datagram, SocketFlags.None, peer);

    /// <summary>Detaches the program and frees the maps and the socket.</summary>
    public void Dispose()
    {
        _stop.Cancel();
        _link.Dispose(); // first: lo is back to normal before the socket goes
        _socket.Dispose();
        _receiving.Wait(TimeSpan.FromSeconds(5));
        _program.Dispose();
        _peersMap.Dispose();
        _configMap.Dispose();
        _stop.Dispose();
        _logger.LogInformation("eBPF proxy: program detached from lo; socket on port {Port} closed", Port);
    }

    private static T Own<T>(List<IDisposable> owned, T item)
        where T : IDisposable
    {
        owned.Add(item);
        return item;
    }

    private static byte[] PeerKey(ushort port)
    {
        // The program compares the UDP header's dest (network byte order) widened to a u32 in host (little) order.
        var key = new byte[4];
        BinaryPrimitives.WriteUInt16BigEndian(key, port);
        return key;
    }

    private static void TrySetBuffers(Socket socket, ILogger logger)
    {
        try
        {
            socket.ReceiveBufferSize = BufferBytes;
            socket.SendBufferSize = BufferBytes;
        }
        catch (SocketException e)
        {
            logger.LogDebug("eBPF proxy: the socket keeps its default buffers: {Error}", e.SocketErrorCode);
        }
    }

    // Oldest-freed first, so a late datagram for a removed peer is not blamed on the next one.
    private ushort RentPort()
    {
        if (_freed.Count > 0 && (_nextPort > LastPeerPort || _freed.Count > 1024))
        {
            return _freed.Dequeue();
        }

        while (_nextPort <= LastPeerPort)
        {
            var port = _nextPort++;
            if (port != Port && port != WireGuardPort && port != WireGuardPort + 1)
            {
                return port;
            }
        }

        return _freed.Count > 0 ? _freed.Dequeue() : throw new InvalidOperationException("the eBPF proxy has no peer port left");
    }

    private async Task ReceiveLoopAsync()
    {
        var buffer = GC.AllocateUninitializedArray<byte>(65536, pinned: true);
        var from = new SocketAddress(AddressFamily.InterNetwork);
        var token = _stop.Token;
        while (!token.IsCancellationRequested)
        {
            int length;
            try
            {
                length = await _socket.ReceiveFromAsync(buffer, SocketFlags.None, from, token);
            }
            catch (Exception e) when (e is ObjectDisposedException or OperationCanceledException)
            {
                return;
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.OperationAborted or SocketError.Interrupted)
            {
                return;
            }
            catch (SocketException e)
            {
                // An ICMP error for an earlier send (a peer port no longer rewritten): not this receive's problem.
                _logger.LogDebug("eBPF proxy: receive failed ({Error}); going on", e.SocketErrorCode);
                continue;
            }

            var address = from.Buffer.Span;
            var port = BinaryPrimitives.ReadUInt16BigEndian(address[2..]);
            if (BinaryPrimitives.ReadUInt32BigEndian(address[4..]) == 0x7F00_0001
                && _byPort.TryGetValue(port, out var proxy))
            {
                await proxy.ForwardFromWireGuardAsync(buffer.AsMemory(0, length));
            }
            else
            {
                Interlocked.Increment(ref _dropped);
            }
        }
    }
}
