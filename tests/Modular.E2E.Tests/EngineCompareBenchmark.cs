using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// One round of `scripts/bench engine-compare` (MODULAR_BENCH=1) for the build the binaries come from
/// (MODULAR_AGENT_DIR, MODULAR_SERVER_DIR; see <see cref="BuiltBinaries"/>), so this tree's test can drive an
/// older build: P2P iperf3 TCP through two userspace agents, then the first reply from an idle peer between
/// two lazy agents. Both pairs register with one real server on SQLite. Agents log at Info, since Debug
/// logging costs throughput. Writes its numbers as one JSON object to MODULAR_BENCH_OUT (when set) before it
/// asserts that every first packet was answered; a benchmark, so it asserts nothing about the numbers.
/// </summary>
public sealed partial class EngineCompareBenchmark(ITestOutputHelper output)
{
    [SkippableFact]
    public void One_round_of_the_engine_comparison()
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MODULAR_BENCH") == "1", "benchmark: set MODULAR_BENCH=1");
        MeshRig.RequirePrerequisites();
        Prerequisites.RequireTool("iperf3");
        var seconds = Setting("MODULAR_BENCH_IPERF_SECONDS", 3);
        var wakes = Setting("MODULAR_BENCH_WAKES", 3);

        using var rig = new MeshRig(output, "ec");
        rig.StartServer();
        var key = rig.CreateSetupKey();

        // Tunnel: two always-connected agents (the default), P2P.
        string[] tunnel = ["et1", "et2"];
        foreach (var name in tunnel)
        {
            rig.AddAgent(name).WriteConfig(key, logLevel: "info");
            rig[name].Start();
        }

        rig.WaitUntil(() => rig["et1"].IsConnected("et2", "P2P") && rig["et2"].IsConnected("et1", "P2P"), TimeSpan.FromSeconds(120), "et1 <-> et2 P2P",
            () => MeshTests.Diagnostics(rig, tunnel));
        rig.WaitUntil(() => rig["et1"].Ping(rig["et2"].OverlayIp!), MeshTests.FirstPingTimeout, "et1 -> et2 ping");
        var bits = Iperf(rig["et1"], rig["et2"], seconds);

        // Stopped (goodbye over signal) so they do not wake the lazy pair; the lazy agents park them as offline peers.
        rig["et1"].Stop();
        rig["et2"].Stop();

        // Lazy wake: both agents lazy with a short inactivity timeout, so they fall Idle again between wakes.
        string[] lazy = ["el1", "el2"];
        foreach (var name in lazy)
        {
            rig.AddAgent(name).WriteConfig(key, "[features]\nlazy_connections = true\ninactivity_timeout = \"3s\"", logLevel: "info");
            rig[name].Start();
        }

        var wakeMs = new List<double>();
        var lost = 0;
        for (var wake = 0; wake < wakes; wake++)
        {
            rig.WaitUntil(() => IsIdle(rig["el1"], "el2") && IsIdle(rig["el2"], "el1"), TimeSpan.FromSeconds(90), "el1 and el2 both Idle",
                () => MeshTests.Diagnostics(rig, lazy));
            // One echo request, one chance: an answer proves the first packet was staged and delivered, not dropped.
            var first = rig["el1"].Namespace.TryExec($"ping -c 1 -W 10 {rig["el2"].OverlayIp}", TimeSpan.FromSeconds(20));
            if (first.ExitCode == 0 && RttPattern().Match(first.Output) is { Success: true } rtt)
            {
                wakeMs.Add(double.Parse(rtt.Groups[1].Value, CultureInfo.InvariantCulture));
            }
            else
            {
                lost++;
                rig.Log($"wake {wake}: the first packet was not answered\n{first.Output}");
            }
        }

        var result = new Result(bits / 1e9, seconds, wakeMs, lost, wakeMs.Count == 0 ? null : Median(wakeMs));
        var json = JsonSerializer.Serialize(result, JsonOptions);
        output.WriteLine(json);
        if (Environment.GetEnvironmentVariable("MODULAR_BENCH_OUT") is { Length: > 0 } path)
        {
            File.WriteAllText(path, json);
        }

        Assert.True(lost == 0, $"{lost} of {wakes} first packets to an idle peer were not answered\n{MeshTests.Diagnostics(rig, lazy)}");
    }

    /// <summary>One build's numbers for one round; the field names are what scripts/bench reads.</summary>
    private sealed record Result(double TunnelGbitPerS, int IperfSeconds, List<double> WakeMs, int WakeLost, double? WakeMedianMs);

    private static readonly JsonSerializerOptions JsonOptions = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    private static double Iperf(MeshRig.Agent client, MeshRig.Agent server, int seconds)
    {
        using var listener = server.Namespace.Start("iperf3 -s -1");
        server.Namespace.WaitForTcpListener(5201, TimeSpan.FromSeconds(30));
        var result = client.Namespace.Exec($"iperf3 -c {server.OverlayIp} -t {seconds} -J", TimeSpan.FromSeconds(seconds + 30));
        using var document = JsonDocument.Parse(result);
        var bits = document.RootElement.GetProperty("end").GetProperty("sum_received").GetProperty("bits_per_second").GetDouble();
        Assert.True(bits > 0, "iperf3 moved nothing");
        return bits;
    }

    private static int Setting(string variable, int fallback)
        => int.TryParse(Environment.GetEnvironmentVariable(variable), CultureInfo.InvariantCulture, out var value) && value > 0 ? value : fallback;

    private static bool IsIdle(MeshRig.Agent agent, string peer)
        => agent.Peer(peer) is { } p && p.GetProperty("state").GetString() == "Idle";

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted[sorted.Count / 2];
    }

    [GeneratedRegex(@"time=([0-9.]+) ms", RegexOptions.CultureInvariant)]
    private static partial Regex RttPattern();
}
