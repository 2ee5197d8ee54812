using System.Diagnostics;
using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.WireGuard;
using Modular.Testing.WireGuard;
using Modular.WireGuard.Crypto;
using Modular.WireGuard.Device;

namespace Modular.Benchmarks.WireGuard;

/// <summary>
/// Two devices in one process over the in-memory network: how many 1400-byte packets per second
/// the engine moves one way, with its real threads (TUN reader on A, receiver on B). The in-memory
/// doubles copy each packet twice, so this is a floor for the engine, not a tunnel figure.
/// Run: dotnet run -c Release --project bench/Modular.Benchmarks -- wg-throughput [packets]
/// </summary>
public static class InMemoryThroughput
{
    public static void Run(int packets)
    {
        var binds = new InMemoryBindPair();
        using var tunA = new InMemoryTun("thrA", 1420);
        using var tunB = new InMemoryTun("thrB", 1420);
        using var a = new WgDevice(tunA, binds.A, NullLoggerFactory.Instance, TimeProvider.System);
        using var b = new WgDevice(tunB, binds.B, NullLoggerFactory.Instance, TimeProvider.System);
        var key = new byte[32];
        Curve25519.GeneratePrivateKey(key);
        a.SetPrivateKey(new WgKey(key));
        Curve25519.GeneratePrivateKey(key);
        b.SetPrivateKey(new WgKey(key));
        a.SetListenPort(51820);
        b.SetListenPort(51821);
        a.SetPeer(new WgPeerConfig(b.PublicKey, [IPNetwork.Parse("100.64.0.2/32")], IPEndPoint.Parse("198.18.0.2:51821")));
        b.SetPeer(new WgPeerConfig(a.PublicKey, [IPNetwork.Parse("100.64.0.1/32")], IPEndPoint.Parse("198.18.0.1:51820")));
        a.Up();
        b.Up();

        var packet = new byte[1400];
        packet[0] = 0x45;
        packet[2] = 1400 >> 8;
        packet[3] = 1400 & 0xff;
        packet[9] = 253;
        IPAddress.Parse("100.64.0.1").TryWriteBytes(packet.AsSpan(12), out _);
        IPAddress.Parse("100.64.0.2").TryWriteBytes(packet.AsSpan(16), out _);
        tunA.Inject(packet);
        if (tunB.TryReadWritten(TimeSpan.FromSeconds(30)) is null)
        {
            throw new InvalidOperationException("no handshake");
        }

        var received = 0;
        var reader = new Thread(() =>
        {
            while (received < packets && tunB.TryReadWritten(TimeSpan.FromSeconds(5)) is not null)
            {
                received++;
            }
        });
        var cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
        var clock = Stopwatch.StartNew();
        reader.Start();
        for (var i = 0; i < packets; i++)
        {
            while (!tunA.Inject(packet))
            {
                Thread.Yield(); // the in-memory TUN queue is bounded
            }
        }

        reader.Join();
        clock.Stop();
        var cpu = Process.GetCurrentProcess().TotalProcessorTime - cpuBefore;
        var seconds = clock.Elapsed.TotalSeconds;
        Console.WriteLine($"packets sent {packets}, received {received}, dropped {packets - received}");
        Console.WriteLine($"wall {seconds:F2} s: {received / seconds:F0} packets/s, {received * 1400.0 * 8 / seconds / 1e9:F2} Gbit/s of 1400-byte packets");
        Console.WriteLine($"process CPU {cpu.TotalSeconds:F2} s: {received / cpu.TotalSeconds:F0} packets per CPU-second, {received * 1400.0 * 8 / cpu.TotalSeconds / 1e9:F2} Gbit/s per CPU-second");
    }
}
