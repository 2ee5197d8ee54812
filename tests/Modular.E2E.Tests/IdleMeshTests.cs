using System.Diagnostics;
using System.Text.Json;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// Issue 13, "idle peers are torn down every ~3 minutes": three userspace agents with no traffic between them stay
/// Connected past the point where WireGuard's first session expires (REJECT_AFTER_TIME, 180 s), with no reconnect.
/// The short run is part of the suite; the 10-minute soak is opt-in (MODULAR_SOAK=1, or `scripts/bench idle-soak`).
/// </summary>
public sealed class IdleMeshTests(ITestOutputHelper output)
{
    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(90);
    private static readonly TimeSpan SampleEvery = TimeSpan.FromSeconds(4);

    [SkippableFact]
    public void Idle_peers_are_not_torn_down_three_agents_idle_past_the_180_s_mark()
    {
        MeshRig.RequirePrerequisites();
        RunIdleMesh(TimeSpan.FromSeconds(220));
    }

    [SkippableFact]
    public void Idle_peers_are_not_torn_down_soak_three_agents_idle_10_minutes()
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MODULAR_SOAK") == "1", "soak: set MODULAR_SOAK=1 (scripts/bench idle-soak)");
        MeshRig.RequirePrerequisites();
        RunIdleMesh(TimeSpan.FromMinutes(10));
    }

    private void RunIdleMesh(TimeSpan idle)
    {
        using var rig = new MeshRig(output, "i");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["a1", "a2", "a3"];
        foreach (var name in names)
        {
            rig.AddAgent(name).WriteConfig(key, "[proxy]\nkind = \"udp\"");
        }

        foreach (var name in names)
        {
            rig[name].Start();
        }

        rig.WaitUntil(
            () => names.All(a => names.Where(b => b != a).All(b => rig[a].IsConnected(b))),
            ConnectTimeout,
            "all three agents Connected to each other",
            () => MeshTests.Diagnostics(rig, names));

        // No traffic from here on: every pair must be Connected at every sample, and nobody may log a reconnect.
        var clock = Stopwatch.StartNew();
        var samples = 0;
        while (clock.Elapsed < idle)
        {
            Thread.Sleep(SampleEvery);
            samples++;
            foreach (var a in names)
            {
                var status = rig[a].Status();
                Assert.True(status is not null, $"{a} answers status at {clock.Elapsed.TotalSeconds:F0} s");
                foreach (var b in names.Where(b => b != a))
                {
                    var state = StateOf(status.Value, b);
                    Assert.True(state == "Connected",
                        $"{a} -> {b} is {state} after {clock.Elapsed.TotalSeconds:F0} s idle (sample {samples})\n{MeshTests.Diagnostics(rig, names)}");
                }
            }
        }

        rig.Log($"{samples} samples over {clock.Elapsed.TotalSeconds:F0} s idle: every pair Connected");
        foreach (var name in names)
        {
            var log = rig[name].Log;
            Assert.DoesNotContain("went stale", log, StringComparison.Ordinal);
            Assert.DoesNotContain("; retrying", log, StringComparison.Ordinal);
        }
    }

    private static string? StateOf(JsonElement status, string peer)
        => status.GetProperty("peers").EnumerateArray()
            .Where(p => p.GetProperty("name").GetString() is { } name && (name == peer || name.StartsWith(peer + ".", StringComparison.Ordinal)))
            .Select(p => p.GetProperty("state").GetString())
            .FirstOrDefault();
}
