using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Modular.Control.Crypto;
using Modular.Control.Management;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// End-to-end benchmarks of the agent (MODULAR_BENCH=1): `status -d` with 1,000 peers in the map,
/// relayed iperf3 throughput with the relay's CPU, and P2P throughput with the firewall on vs off. They print numbers and assert only that the setup worked.
/// </summary>
public sealed class EngineBenchmarks(ITestOutputHelper output)
{
    private static void RequireBench()
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MODULAR_BENCH") == "1", "benchmark: set MODULAR_BENCH=1");
        MeshRig.RequirePrerequisites();
    }

    [SkippableFact]
    public async Task Status_with_1000_peers()
    {
        RequireBench();
        using var rig = new MeshRig(output, "s");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        var agent = rig.AddAgent("a1");
        agent.WriteConfig(key, "[proxy]\nkind = \"udp\"");

        // 999 other registered peers (never online): the agent's map holds 999 remote peers.
        using (var channel = BadInputTests.ChannelInto(rig))
        {
            var registrations = Enumerable.Range(0, 999).Select(async i =>
            {
                using var identity = X25519KeyPair.Generate();
                await new ManagementClient(channel, identity).RegisterAsync(key, new PeerMeta { Hostname = $"ghost{i}" }, CancellationToken.None);
            });
            foreach (var batch in registrations.Chunk(50))
            {
                await Task.WhenAll(batch);
            }
        }

        agent.Start();
        rig.WaitUntil(() => agent.Status() is { } s && s.GetProperty("peers").GetArrayLength() == 999, TimeSpan.FromSeconds(120), "999 peers in a1's status");

        // The client under test and, in an installed layout, the managed program beside the native
        // `modular`: interleaved, so both see the same machine.
        var clients = new List<string> { MeshRig.AgentBinary };
        var managed = Path.Combine(Path.GetDirectoryName(MeshRig.AgentBinary)!, "modulard");
        if (File.Exists(managed))
        {
            clients.Add(managed);
        }

        var text = clients.ToDictionary(c => c, _ => new List<double>());
        var json = clients.ToDictionary(c => c, _ => new List<double>());
        for (var i = 0; i < 10; i++)
        {
            foreach (var client in clients)
            {
                text[client].Add(Time(() => Shell.Run(client, $"status -d --socket {agent.Socket}")));
                json[client].Add(Time(() => Shell.Run(client, $"status --json --socket {agent.Socket}")));
            }
        }

        foreach (var client in clients)
        {
            var version = Time(() => Shell.Run(client, "--version"));
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{client}: status -d, 999 peers: median {Median(text[client]):F0} ms (min {text[client].Min():F0}); status --json: median {Median(json[client]):F0} ms; --version (process start alone): {version:F0} ms"));
        }
    }

    [SkippableTheory]
    [InlineData("udp")]
    [InlineData("bind")]
    public void Relay_throughput(string proxy)
    {
        RequireBench();
        Prerequisites.RequireTool("iperf3");
        using var rig = new MeshRig(output, "t");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        var a = rig.AddAgent("a1");
        var b = rig.AddAgent("a2");
        a.WriteConfig(key, $"[proxy]\nkind = \"{proxy}\"\n[connection]\nforce_relay = true");
        b.WriteConfig(key, $"[proxy]\nkind = \"{proxy}\"\n[connection]\nforce_relay = true");
        a.Start();
        b.Start();
        rig.WaitUntil(() => a.IsConnected("a2", "Relayed") && b.IsConnected("a1", "Relayed"), TimeSpan.FromSeconds(90), "both relayed", () => MeshTests.Diagnostics(rig, ["a1", "a2"]));

        using var server = b.Namespace.Start("iperf3 -s -1");
        b.Namespace.WaitForTcpListener(5201, TimeSpan.FromSeconds(30));
        var relayPid = rig.ServerProcess!.Id;
        var cpuBefore = MeshRig.CpuSeconds(relayPid);
        var clock = Stopwatch.StartNew();
        var result = a.Namespace.Exec($"iperf3 -c {b.OverlayIp} -t 10 -J", TimeSpan.FromSeconds(40));
        var wall = clock.Elapsed.TotalSeconds;
        var cpu = MeshRig.CpuSeconds(relayPid) - cpuBefore;
        using var document = JsonDocument.Parse(result);
        var bits = document.RootElement.GetProperty("end").GetProperty("sum_received").GetProperty("bits_per_second").GetDouble();
        Assert.True(bits > 0);
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"relayed iperf3 ({proxy} proxy): {bits / 1e9:F2} Gbit/s; server (relay) CPU {cpu:F1} s over {wall:F1} s = {cpu / wall:F2} cores; {bits / 1e9 / Math.Max(cpu / wall, 0.01):F2} Gbit/s per relay core"));
    }

    /// <summary>
    /// P2P iperf3 through two userspace agents with the firewall on (Default policy: every flow is tracked)
    /// and through two with `[firewall] enabled = false`, interleaved in one run (median of 3 rounds each).
    /// </summary>
    [SkippableFact]
    public void Tunnel_throughput_with_the_firewall_on_and_off()
    {
        RequireBench();
        Prerequisites.RequireTool("iperf3");
        using var rig = new MeshRig(output, "f");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["on1", "on2", "off1", "off2"];
        foreach (var name in names)
        {
            rig.AddAgent(name).WriteConfig(key, $"[proxy]\nkind = \"udp\"\n[firewall]\nenabled = {(name.StartsWith("on", StringComparison.Ordinal) ? "true" : "false")}");
            rig[name].Start();
        }

        rig.WaitUntil(() => rig["on1"].IsConnected("on2", "P2P") && rig["off1"].IsConnected("off2", "P2P"), TimeSpan.FromSeconds(120), "both pairs P2P",
            () => MeshTests.Diagnostics(rig, names));
        rig.WaitUntil(() => rig["on1"].Ping(rig["on2"].OverlayIp!) && rig["off1"].Ping(rig["off2"].OverlayIp!), MeshTests.FirstPingTimeout, "pings in both pairs");

        var on = new List<double>();
        var off = new List<double>();
        for (var round = 0; round < 3; round++)
        {
            on.Add(Iperf(rig["on1"], rig["on2"]));
            off.Add(Iperf(rig["off1"], rig["off2"]));
        }

        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"P2P iperf3 through userspace agents, median of 3: firewall on {Median(on) / 1e9:F2} Gbit/s [{string.Join(", ", on.Select(b => (b / 1e9).ToString("F2", CultureInfo.InvariantCulture)))}], " +
            $"off {Median(off) / 1e9:F2} Gbit/s [{string.Join(", ", off.Select(b => (b / 1e9).ToString("F2", CultureInfo.InvariantCulture)))}]; on/off = {Median(on) / Median(off):F2}"));
    }

    /// <summary>
    /// Issue 14's benchmark: P2P iperf3 through two userspace agents with flow logging on (<c>[netflow] enabled =
    /// true</c>: every flow tracked, its events built, stored and shipped to the server) and through two without,
    /// the firewall on in both, interleaved in one run (median of 3 rounds; <c>MODULAR_BENCH_SECONDS</c> per
    /// iperf3 run, default 10). Target: netflow on less than 10% slower.
    /// </summary>
    [SkippableFact]
    public void Tunnel_throughput_with_netflow_on_and_off()
    {
        RequireBench();
        Prerequisites.RequireTool("iperf3");
        using var rig = new MeshRig(output, "nb");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["non1", "non2", "noff1", "noff2"];
        foreach (var name in names)
        {
            var netflow = name.StartsWith("non", StringComparison.Ordinal) ? "\n[netflow]\nenabled = true" : "";
            rig.AddAgent(name).WriteConfig(key, $"[proxy]\nkind = \"udp\"\n[firewall]\nenabled = true{netflow}");
            rig[name].Start();
        }

        rig.WaitUntil(() => rig["non1"].IsConnected("non2", "P2P") && rig["noff1"].IsConnected("noff2", "P2P"), TimeSpan.FromSeconds(120), "both pairs P2P",
            () => MeshTests.Diagnostics(rig, names));
        rig.WaitUntil(() => rig["non1"].Ping(rig["non2"].OverlayIp!) && rig["noff1"].Ping(rig["noff2"].OverlayIp!), MeshTests.FirstPingTimeout, "pings in both pairs");
        Assert.True(rig["non2"].Status()!.Value.GetProperty("features").GetProperty("netflow").GetBoolean(), "flow logging is on at non2");
        Assert.False(rig["noff2"].Status()!.Value.GetProperty("features").GetProperty("netflow").GetBoolean(), "flow logging is off at noff2");

        var on = new List<double>();
        var off = new List<double>();
        for (var round = 0; round < 3; round++)
        {
            on.Add(Iperf(rig["non1"], rig["non2"]));
            off.Add(Iperf(rig["noff1"], rig["noff2"]));
        }

        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"P2P iperf3 through userspace agents (firewall on), median of 3: netflow on {Median(on) / 1e9:F2} Gbit/s [{string.Join(", ", on.Select(b => (b / 1e9).ToString("F2", CultureInfo.InvariantCulture)))}], " +
            $"off {Median(off) / 1e9:F2} Gbit/s [{string.Join(", ", off.Select(b => (b / 1e9).ToString("F2", CultureInfo.InvariantCulture)))}]; on/off = {Median(on) / Median(off):F2}"));
    }

    private static double Iperf(MeshRig.Agent client, MeshRig.Agent server)
    {
        using var listener = server.Namespace.Start("iperf3 -s -1");
        server.Namespace.WaitForTcpListener(5201, TimeSpan.FromSeconds(30));
        var seconds = int.TryParse(Environment.GetEnvironmentVariable("MODULAR_BENCH_SECONDS"), CultureInfo.InvariantCulture, out var s) && s > 0 ? s : 10;
        var result = client.Namespace.Exec($"iperf3 -c {server.OverlayIp} -t {seconds} -J", TimeSpan.FromSeconds(seconds + 30));
        using var document = JsonDocument.Parse(result);
        var bits = document.RootElement.GetProperty("end").GetProperty("sum_received").GetProperty("bits_per_second").GetDouble();
        Assert.True(bits > 0);
        return bits;
    }

    private static double Time(Action action)
    {
        var clock = Stopwatch.StartNew();
        action();
        return clock.Elapsed.TotalMilliseconds;
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted[sorted.Count / 2];
    }
}
