using System.Diagnostics;
using System.Globalization;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// Issue 17's soak (opt-in: MODULAR_SOAK=1, or `scripts/bench fault-soak`): three userspace agents with lazy connections
/// run mixed traffic (ping, iperf3 TCP and UDP) for MODULAR_SOAK_MINUTES (default 30), their peers waking for each burst
/// and going idle between bursts. Each daemon's open fds and RSS are sampled whenever every peer is Idle again (the same
/// state each time); from the first such sample past minute 5 (a sixth of a longer run, half of one under 10 minutes) on, each daemon's fd count
/// must be the same at every sample and its RSS at the last one within 5 % of the first.
/// </summary>
public sealed class FaultSoakTests(ITestOutputHelper output)
{
    private const double RssTolerance = 0.05;
    private static readonly TimeSpan IdleTimeout = TimeSpan.FromSeconds(15);

    [SkippableFact]
    public void Soak_three_lazy_agents_with_mixed_traffic_keep_fds_and_memory_flat()
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MODULAR_SOAK") == "1", "soak: set MODULAR_SOAK=1 (scripts/bench fault-soak)");
        MeshRig.RequirePrerequisites();
        Prerequisites.RequireTool("iperf3");
        var minutes = double.Parse(Environment.GetEnvironmentVariable("MODULAR_SOAK_MINUTES") is { Length: > 0 } m ? m : "30", CultureInfo.InvariantCulture);
        var duration = TimeSpan.FromMinutes(minutes);
        // Warm-up (tiered JIT, first wakes) takes about five minutes: a shorter run compares from there, not from a sixth.
        var settle = TimeSpan.FromTicks(Math.Max((duration / 6).Ticks, Math.Min(TimeSpan.FromMinutes(5).Ticks, (duration / 2).Ticks)));

        using var rig = new MeshRig(output, "sk");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["s1", "s2", "s3"];
        foreach (var name in names)
        {
            rig.AddAgent(name).WriteConfig(key, $"[proxy]\nkind = \"udp\"\n[features]\nlazy_connections = true\ninactivity_timeout = \"{IdleTimeout.TotalSeconds:F0}s\"", logLevel: "info");
            rig[name].Start();
        }

        rig.WaitUntil(() => names.All(n => rig[n].OverlayIp is not null && FaultTests.ControlPlaneUp(rig[n])), TimeSpan.FromSeconds(90), "three agents logged in", () => MeshTests.Diagnostics(rig, names));
        var ips = names.ToDictionary(n => n, n => rig[n].OverlayIp!);
        var servers = names.Select(n => rig[n].Namespace.Start("iperf3 -s")).ToList();
        try
        {
            foreach (var name in names)
            {
                rig[name].Namespace.WaitForTcpListener(5201, TimeSpan.FromSeconds(30));
            }

            var clock = Stopwatch.StartNew();
            var samples = new List<(TimeSpan At, Dictionary<string, (int Fds, long RssKb)> Daemons)>();
            var cycle = 0;
            var random = new Random(17);
            while (clock.Elapsed < duration)
            {
                cycle++;
                // A burst: every pair pings (waking its peers), one random pair runs iperf3 TCP, another UDP.
                foreach (var from in names)
                {
                    foreach (var to in names.Where(n => n != from))
                    {
                        rig.WaitUntil(() => rig[from].Ping(ips[to], count: 1), TimeSpan.FromSeconds(60), $"{from} -> {to} wakes and answers (cycle {cycle})", () => MeshTests.Diagnostics(rig, names));
                    }
                }

                var tcp = names[random.Next(names.Length)];
                var tcpTo = names.Where(n => n != tcp).ElementAt(random.Next(2));
                var tcpRun = rig[tcp].Namespace.TryExec($"iperf3 -c {ips[tcpTo]} -t 2 -J", TimeSpan.FromSeconds(30));
                Assert.True(tcpRun.ExitCode == 0, $"iperf3 TCP {tcp} -> {tcpTo} (cycle {cycle})\n{tcpRun.Output}{tcpRun.Error}");
                var udp = names[random.Next(names.Length)];
                var udpTo = names.Where(n => n != udp).ElementAt(random.Next(2));
                var udpRun = rig[udp].Namespace.TryExec($"iperf3 -c {ips[udpTo]} -u -b 20M -t 2 -J", TimeSpan.FromSeconds(30));
                Assert.True(udpRun.ExitCode == 0, $"iperf3 UDP {udp} -> {udpTo} (cycle {cycle})\n{udpRun.Output}{udpRun.Error}");

                // Quiet: every peer goes Idle after the inactivity timeout; then all daemons are in the same state as at
                // every other sample, and their fds and memory are comparable.
                rig.WaitUntil(() => names.All(n => AllIdle(rig[n])), IdleTimeout * 6, $"every peer Idle again (cycle {cycle})", () => MeshTests.Diagnostics(rig, names));
                var sample = names.ToDictionary(n => n, n => Measure(rig[n].Process!.Id));
                samples.Add((clock.Elapsed, sample));
                rig.Log(string.Create(CultureInfo.InvariantCulture, $"cycle {cycle} at {clock.Elapsed.TotalMinutes:F1} min: ")
                        + string.Join("; ", sample.Select(s => $"{s.Key} fds {s.Value.Fds} rss {s.Value.RssKb} kB")));
                // What the RSS is made of (not asserted): the managed heap after the last GC and what the GC holds
                // committed (the agent's metrics), anonymous and file-backed resident memory (/proc). A heap that grows
                // is a leak; a flat heap under a growing RSS is the runtime keeping memory.
                rig.Log("  " + string.Join("; ", names.Select(n => $"{n} {Breakdown(rig[n])}")));
            }

            var measured = samples.Where(s => s.At >= settle).ToList();
            Assert.True(measured.Count >= 2, $"at least two samples after {settle.TotalMinutes:F1} min (got {measured.Count}); run longer");
            var (first, last) = (measured[0], measured[^1]);
            rig.Log(string.Create(CultureInfo.InvariantCulture, $"{cycle} cycles over {clock.Elapsed.TotalMinutes:F1} min; compared {first.At.TotalMinutes:F1} min with {last.At.TotalMinutes:F1} min"));
            foreach (var name in names)
            {
                var (before, after) = (first.Daemons[name], last.Daemons[name]);
                var growth = (after.RssKb - before.RssKb) / (double)before.RssKb;
                rig.Log(string.Create(CultureInfo.InvariantCulture, $"{name}: fds {before.Fds} -> {after.Fds}; rss {before.RssKb} -> {after.RssKb} kB ({growth:P1})"));
                // Equal at every sample in the window, not only at its ends: a descriptor opened and closed again later
                // (a lazily-closed pipe) is a count that follows the GC, not the traffic.
                var fds = measured.Select(m => m.Daemons[name].Fds).ToList();
                Assert.True(fds.All(f => f == before.Fds), $"{name}: open fds at every sample from {first.At.TotalMinutes:F1} min on: {string.Join(' ', fds)}");
                Assert.True(Math.Abs(growth) <= RssTolerance, $"{name}: RSS {before.RssKb} kB at {first.At.TotalMinutes:F1} min, {after.RssKb} kB at {last.At.TotalMinutes:F1} min ({growth:P1})");
            }
        }
        finally
        {
            foreach (var server in servers)
            {
                server.Dispose();
            }
        }
    }

    private static bool AllIdle(MeshRig.Agent agent)
        => agent.Status() is { } s && s.GetProperty("peers").GetArrayLength() == 2
           && s.GetProperty("peers").EnumerateArray().All(p => p.GetProperty("state").GetString() == "Idle");

    /// <summary>
    /// The agent's managed heap after the last GC, what survived the last full one, its fragmentation, the full
    /// collections so far and the GC's committed memory (its metrics endpoint), and its RSS by
    /// kind (/proc: anonymous, file-backed, shared — the runtime's double-mapped JIT code), in kB.
    /// </summary>
    private static string Breakdown(MeshRig.Agent agent)
    {
        var metrics = agent.Namespace.TryExec("curl -sS --max-time 10 http://127.0.0.1:9090/metrics", TimeSpan.FromSeconds(20)).Output;
        string Kb(string series) => metrics.Contains(series + " ", StringComparison.Ordinal)
            ? (PrometheusText.Value(metrics, series) / 1024).ToString("F0", CultureInfo.InvariantCulture)
            : "?";
        var status = File.ReadLines($"/proc/{agent.Process!.Id}/status").ToList();
        string Field(string key) => status.FirstOrDefault(l => l.StartsWith(key + ":", StringComparison.Ordinal))?.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries)[1] ?? "?";
        return $"heap {Kb("dotnet_gc_heap_size_bytes")} live {Kb("dotnet_gc_live_bytes")} fragmented {Kb("dotnet_gc_fragmented_bytes")} gen2 {metrics.Split('\n').FirstOrDefault(l => l.StartsWith("dotnet_collection_count_total{generation=\"2\"}", StringComparison.Ordinal))?.Split(' ')[^1] ?? "?"} committed {Kb("dotnet_gc_committed_bytes")} anon {Field("RssAnon")} file {Field("RssFile")} shmem {Field("RssShmem")} kB, threads {Field("Threads")}";
    }

    /// <summary>A daemon's open file descriptors and resident memory, from /proc.</summary>
    private static (int Fds, long RssKb) Measure(int pid)
    {
        var fds = Directory.GetFiles($"/proc/{pid}/fd").Length;
        var rss = File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
        return (fds, long.Parse(rss.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture));
    }
}
