using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.WireGuard;
using Modular.Core.Lazy;
using Modular.Testing;
using Modular.WireGuard.Interface;
using Modular.WireGuard.Kernel;

namespace Modular.Core.Tests.Lazy;

/// <summary>
/// The loopback monitor serving a real wireguard-go (what kernel mode drives on machines without the module),
/// both inside a network namespace the test owns. The idle peer's only endpoint is the stand-in; a ping to its
/// overlay address must make wireguard-go send a handshake initiation that the monitor reports for that peer.
/// </summary>
public sealed class LoopbackActivityMonitorNamespaceTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);
    private static int _counter;

    [SkippableFact]
    public async Task A_ping_to_an_idle_peer_of_wireguard_go_is_reported_as_its_handshake_initiation()
    {
        Prerequisites.RequireRoot();
        Prerequisites.RequireTool("wireguard-go");
        Prerequisites.RequireTool("wg");
        var n = Interlocked.Increment(ref _counter);
        var subnet = ((Environment.ProcessId + n) % 200) + 20;
        using var ns = NetworkNamespace.Create("lzm");
        var iface = $"lzm{Environment.ProcessId % 10000}n{n}";
        await using var wireGuard = await WireGuardGoProcess.StartAsync(iface, NullLogger.Instance, CancellationToken.None, networkNamespace: ns.Name);
        var keyFile = Path.Combine(Path.GetTempPath(), $"mdl-lazy-key-{Guid.NewGuid():N}");
        try
        {
            File.WriteAllText(keyFile, string.Empty);
            Shell.Run("chmod", $"600 {keyFile}"); // 0600 before the key is written
            File.WriteAllText(keyFile, WgKeys.GeneratePrivateKey().ToBase64() + "\n");
            ns.Exec($"wg set {iface} private-key {keyFile}");
            ns.Exec($"ip addr add 100.64.{subnet}.1/24 dev {iface}");
            ns.Exec($"ip link set {iface} up");

            var listener = new RecordingActivityListener();
            await using var monitor = InNamespace.Create(ns.Name, () => new LoopbackActivityMonitor(listener, NullLogger.Instance));
            var idle = WgKeys.PublicKeyOf(WgKeys.GeneratePrivateKey());
            var other = WgKeys.PublicKeyOf(WgKeys.GeneratePrivateKey());
            monitor.Watch(other); // a second watched peer: the report must name the right one
            var standIn = monitor.Watch(idle);
            ns.Exec($"wg set {iface} peer {idle.ToBase64()} allowed-ips 100.64.{subnet}.2/32 endpoint {standIn}");

            ns.TryExec($"ping -c 1 -W 1 100.64.{subnet}.2", TimeSpan.FromSeconds(10)); // no answer: the peer is idle

            var report = listener.Next(Wait);
            Assert.True(report.HasValue, $"no report; reported {monitor.DatagramsReported}, dropped {monitor.DatagramsDropped}; {ns.TryExec($"wg show {iface}").Output}");
            Assert.Equal(idle, report.Value.Peer);
            Assert.Equal(148, report.Value.Datagram.Length);
            Assert.Equal(1, report.Value.Datagram[0]);
            Assert.Equal(0, monitor.DatagramsDropped);
            Assert.True(monitor.BoundToLoopback);

            // The socket is the namespace's, not the host's: `ss` there shows it on the monitor's port.
            Assert.Contains($":{monitor.Port}", ns.Exec($"ss -uanH sport = :{monitor.Port}"), StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(keyFile);
        }
    }

    [SkippableFact]
    public async Task Datagrams_from_a_non_loopback_source_are_dropped_and_counted_and_other_interfaces_never_reach_the_socket()
    {
        Prerequisites.RequireRoot();
        var n = Interlocked.Increment(ref _counter);
        var subnet = ((Environment.ProcessId + n) % 200) + 20;
        using var ns = NetworkNamespace.Create("lzf");
        using var neighbour = NetworkNamespace.Create("lzn");
        ns.Link(neighbour, $"198.18.{subnet}.1/24", $"198.18.{subnet}.2/24"); // gives ns a non-loopback address
        var listener = new RecordingActivityListener();
        await using var monitor = InNamespace.Create(ns.Name, () => new LoopbackActivityMonitor(listener, NullLogger.Instance));
        var standIn = monitor.Watch(TestKeys.Peer(1));
        using var foreign = InNamespace.Create(ns.Name, () => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));
        foreign.Bind(new IPEndPoint(IPAddress.Parse($"198.18.{subnet}.1"), 0));
        using var local = InNamespace.Create(ns.Name, () => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));
        local.Bind(new IPEndPoint(IPAddress.Loopback, 0));

        var sent = TrySend(foreign, standIn); // some kernels refuse a loopback destination from a non-loopback source
        local.SendTo(TestKeys.Initiation(0x22), standIn);

        // Both went through lo in order: once the second is reported, the first was seen. This kernel delivers a
        // loopback destination from a local non-loopback source, so only the monitor's source check stops it.
        listener.AssertNext(TestKeys.Peer(1), TestKeys.Initiation(0x22), Wait);
        Assert.Equal(1, monitor.DatagramsReported);
        Assert.Equal(sent ? 1 : 0, monitor.DatagramsDropped);

        // From the neighbour, the monitor's port on ns's veth address: SO_BINDTODEVICE "lo" means no socket
        // takes it (a plain 0.0.0.0 socket would), so the kernel answers port unreachable.
        using var remote = InNamespace.Create(neighbour.Name, () => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));
        remote.Connect(new IPEndPoint(IPAddress.Parse($"198.18.{subnet}.1"), monitor.Port));
        remote.ReceiveTimeout = (int)Wait.TotalMilliseconds;
        remote.Send(TestKeys.Initiation(0x33));
        var refused = Assert.Throws<SocketException>(() => remote.Receive(new byte[16]));
        Assert.Equal(SocketError.ConnectionRefused, refused.SocketErrorCode);
        Assert.Equal(sent ? 1 : 0, monitor.DatagramsDropped);
        Assert.Equal(1, listener.Calls);
    }

    private static bool TrySend(Socket socket, IPEndPoint to)
    {
        try
        {
            socket.SendTo(TestKeys.Initiation(0x11), to);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
