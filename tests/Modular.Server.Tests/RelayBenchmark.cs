using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Modular.Control.Crypto;
using Modular.Control.Relay;
using Xunit.Abstractions;

namespace Modular.Server.Tests;

/// <summary>
/// Relayed throughput on loopback: two peers bind to each other and blast 1400-byte datagrams both
/// ways; reports forwarded Gbit/s and the relay thread's CPU. A measurement, not a test: it runs only
/// with MODULAR_BENCH=1 and asserts nothing about speed.
/// </summary>
public sealed class RelayBenchmark(ITestOutputHelper output)
{
    [SkippableFact]
    public async Task Relay_throughput_on_loopback()
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MODULAR_BENCH") == "1", "benchmark: set MODULAR_BENCH=1 to run");
        var seconds = int.TryParse(Environment.GetEnvironmentVariable("MODULAR_BENCH_SECONDS"), out var s) ? s : 5;
        await using var server = await TestServer.StartAsync();
        var (a, clientA) = server.NewAgent();
        var (b, clientB) = server.NewAgent();
        using var _ = a;
        using var __ = b;
        var setupKey = await server.CreateSetupKeyAsync();
        var tokenA = (await clientA.RegisterAsync(setupKey, TestServer.Meta("a"), default)).Services.RelayToken.ToByteArray();
        var tokenB = (await clientB.RegisterAsync(setupKey, TestServer.Meta("b"), default)).Services.RelayToken.ToByteArray();
        var relay = server.Relay.LocalEndPoint!;

        // Plain blocking sockets on dedicated threads keep client overhead low so the relay is what is measured.
        using var sockA = BoundSocket(relay, a.PublicKey, b.PublicKey, tokenA);
        using var sockB = BoundSocket(relay, b.PublicKey, a.PublicKey, tokenB);
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(seconds));
        long receivedBytes = 0;
        void Blast(Socket socket)
        {
            var payload = new byte[1 + 1400];
            payload[0] = RelayProtocol.Data;
            while (!stop.IsCancellationRequested)
            {
                socket.Send(payload);
            }
        }

        void Drain(Socket socket)
        {
            var buffer = new byte[2048];
            socket.ReceiveTimeout = 200;
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    var n = socket.Receive(buffer);
                    Interlocked.Add(ref receivedBytes, n - 1);
                }
                catch (SocketException)
                {
                }
            }
        }

        var cpuBefore = RelayThreadCpu();
        var forwardedBefore = server.Relay.ForwardedBytes;
        var clock = Stopwatch.StartNew();
        var threads = new[] { new Thread(() => Blast(sockA)), new Thread(() => Blast(sockB)), new Thread(() => Drain(sockA)), new Thread(() => Drain(sockB)) };
        foreach (var t in threads)
        {
            t.Start();
        }

        foreach (var t in threads)
        {
            t.Join();
        }

        await Task.CompletedTask;
        var elapsed = clock.Elapsed.TotalSeconds;
        var cpu = (RelayThreadCpu() - cpuBefore).TotalSeconds;
        var forwarded = server.Relay.ForwardedBytes - forwardedBefore;
        var gbits = forwarded * 8 / elapsed / 1e9;
        var line = string.Create(CultureInfo.InvariantCulture,
            $"relay: forwarded {gbits:F2} Gbit/s ({forwarded / 1400 / elapsed:F0} pkt/s of 1400 B), delivered {receivedBytes * 8 / elapsed / 1e9:F2} Gbit/s, relay thread CPU {cpu / elapsed * 100:F0}% of one core => {(cpu > 0 ? gbits / (cpu / elapsed) : 0):F2} Gbit/s per core; {Environment.ProcessorCount} cores shared with the clients");
        output.WriteLine(line);
        Console.WriteLine(line);
        await File.WriteAllTextAsync(Path.Combine(Path.GetTempPath(), "modular-relay-bench.json"), string.Create(CultureInfo.InvariantCulture,
            $$"""{"forwarded_gbit_s": {{gbits:F3}}, "delivered_gbit_s": {{receivedBytes * 8 / elapsed / 1e9:F3}}, "relay_cpu_cores": {{cpu / elapsed:F3}}, "gbit_s_per_core": {{(cpu > 0 ? gbits / (cpu / elapsed) : 0):F3}}, "seconds": {{elapsed:F1}}}"""));
        Assert.True(forwarded > 0);
    }

    private static Socket BoundSocket(IPEndPoint relay, Modular.Abstractions.WireGuard.WgKey own, Modular.Abstractions.WireGuard.WgKey remote, byte[] token)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { ReceiveBufferSize = 4 << 20, SendBufferSize = 4 << 20 };
        socket.Connect(relay);
        var bind = new byte[RelayProtocol.BindSize];
        RelayProtocol.WriteBind(bind, own, remote, token);
        socket.Send(bind);
        var reply = new byte[16];
        socket.ReceiveTimeout = 5000;
        var n = socket.Receive(reply);
        Assert.True(n == RelayProtocol.BoundSize && reply[0] == RelayProtocol.Bound && reply[1] != (byte)RelayProtocol.BindStatus.Rejected);
        return socket;
    }

    /// <summary>utime+stime of the thread named "relay" in this process (from /proc).</summary>
    private static TimeSpan RelayThreadCpu()
    {
        foreach (var task in Directory.GetDirectories("/proc/self/task"))
        {
            if (File.ReadAllText(Path.Combine(task, "comm")).Trim() != "relay")
            {
                continue;
            }

            var stat = File.ReadAllText(Path.Combine(task, "stat"));
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            var ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
            return TimeSpan.FromSeconds(ticks / 100.0);
        }

        return TimeSpan.Zero;
    }
}
