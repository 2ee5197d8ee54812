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
    public async Task A_ping_to_an_idle_peer_is_reported_as_its_initiation_and_delivered_once_the_peer_is_connected()
    {
        Prerequisites.RequireRoot();
        Prerequisites.RequireTool("wireguard-go");
        Prerequisites.RequireTool("wg");
        var n = Interlocked.Increment(ref _counter);
        var subnet = ((Environment.ProcessId + n) % 200) + 20;
        using var nsA = NetworkNamespace.Create("lzma");
        using var nsB = NetworkNamespace.Create("lzmb");
        nsA.Link(nsB, $"198.18.{subnet}.1/24", $"198.18.{subnet}.2/24");
        var tag = $"{Environment.ProcessId % 10000}n{n}";
        await using var wireGuardA = await StartWireGuardGoAsync(nsA, $"lzma{tag}", $"100.64.{subnet}.1/24");
        await using var wireGuardB = await StartWireGuardGoAsync(nsB, $"lzmb{tag}", $"100.64.{subnet}.2/24");
        nsB.Exec($"wg set {wireGuardB.Iface} peer {wireGuardA.PublicKey.ToBase64()} allowed-ips 100.64.{subnet}.1/32"); // B learns A's endpoint from its handshake

        var listener = new RecordingActivityListener();
        await using var monitor = InNamespace.Create(nsA.Name, () => new LoopbackActivityMonitor(listener, NullLogger.Instance));
        monitor.Watch(WgKeys.PublicKeyOf(WgKeys.GeneratePrivateKey())); // a second watched peer: the report must name B
        var standIn = monitor.Watch(wireGuardB.PublicKey);
        nsA.Exec($"wg set {wireGuardA.Iface} peer {wireGuardB.PublicKey.ToBase64()} allowed-ips 100.64.{subnet}.2/32 endpoint {standIn}");

        // One echo request, waited for long enough to outlive the idle phase: WireGuard stages it meanwhile.
        using var ping = nsA.Start($"ping -c 1 -W 25 100.64.{subnet}.2");

        var report = listener.Next(Wait);
        Assert.True(report.HasValue, $"no report; reported {monitor.DatagramsReported}, dropped {monitor.DatagramsDropped}; {nsA.TryExec($"wg show {wireGuardA.Iface}").Output}");
        Assert.Equal(wireGuardB.PublicKey, report.Value.Peer);
        Assert.Equal(148, report.Value.Datagram.Length);
        Assert.Equal(1, report.Value.Datagram[0]);
        Assert.Equal(0, monitor.DatagramsDropped);
        Assert.True(monitor.BoundToLoopback);
        Assert.Contains($":{monitor.Port}", nsA.Exec($"ss -uanH sport = :{monitor.Port}"), StringComparison.Ordinal); // the namespace's socket, not the host's

        // What the lazy manager does once a path exists: the real endpoint replaces the stand-in. wireguard-go's
        // next retry (within ~5 s) goes to B, and the staged echo request follows the handshake.
        nsA.Exec($"wg set {wireGuardA.Iface} peer {wireGuardB.PublicKey.ToBase64()} endpoint 198.18.{subnet}.2:51820");
        monitor.Unwatch(wireGuardB.PublicKey);

        Assert.True(ping.Process.WaitForExit(TimeSpan.FromSeconds(30)), "ping did not finish");
        ping.Process.WaitForExit(); // it has exited: this only waits for its output to be read
        Assert.True(ping.Process.ExitCode == 0, $"the first packet was lost: {ping.Output}");
        Assert.Contains("1 received", ping.Output, StringComparison.Ordinal);
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

    /// <summary>A wireguard-go in <paramref name="ns"/> with a fresh key, listening on 51820, overlay address set, link up.</summary>
    private static async Task<WireGuardGoSide> StartWireGuardGoAsync(NetworkNamespace ns, string iface, string overlayCidr)
    {
        var process = await WireGuardGoProcess.StartAsync(iface, NullLogger.Instance, CancellationToken.None, networkNamespace: ns.Name);
        var privateKey = WgKeys.GeneratePrivateKey();
        var keyFile = Path.Combine(Path.GetTempPath(), $"mdl-lazy-key-{Guid.NewGuid():N}");
        try
        {
            File.WriteAllText(keyFile, string.Empty);
            Shell.Run("chmod", $"600 {keyFile}"); // 0600 before the key is written
            File.WriteAllText(keyFile, privateKey.ToBase64() + "\n");
            ns.Exec($"wg set {iface} private-key {keyFile} listen-port 51820");
            ns.Exec($"ip addr add {overlayCidr} dev {iface}");
            ns.Exec($"ip link set {iface} up");
        }
        catch
        {
            await process.DisposeAsync();
            throw;
        }
        finally
        {
            File.Delete(keyFile);
        }

        return new WireGuardGoSide(process, iface, WgKeys.PublicKeyOf(privateKey));
    }

    private sealed record WireGuardGoSide(WireGuardGoProcess Process, string Iface, WgKey PublicKey) : IAsyncDisposable
    {
        public ValueTask DisposeAsync() => Process.DisposeAsync();
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
