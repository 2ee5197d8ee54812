using System.Diagnostics;
using System.Text.RegularExpressions;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// Lazy connections between two agents in namespaces, in both WireGuard modes: peers stay Idle until traffic, the
/// first packet is answered (not lost), idle again after the inactivity timeout, and woken again from either side.
/// </summary>
public sealed partial class LazyTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Registered = TimeSpan.FromSeconds(60);

    [SkippableTheory]
    [InlineData("userspace", false)]
    [InlineData("kernel", false)]
    [InlineData("kernel", true)]
    public void An_idle_peer_connects_on_its_first_packet_which_is_answered_then_idles_and_wakes_again(string mode, bool relayed)
    {
        MeshRig.RequirePrerequisites();
        using var rig = new MeshRig(output, (mode == "kernel" ? "zk" : "zu") + (relayed ? "r" : ""));
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["z1", "z2"];

        // One side turns the feature on in its TOML, the other through the environment variable users know.
        // Relayed: the parked peer's endpoint moves from the stand-in to the proxy's (the udp proxy in kernel mode).
        var connection = relayed ? "\n[connection]\nforce_relay = true" : "";
        rig.AddAgent("z1").WriteConfig(key, "[features]\nlazy_connections = true\ninactivity_timeout = \"20s\"" + connection);
        rig.AddAgent("z2").WriteConfig(key, "[features]\ninactivity_timeout = \"20s\"" + connection);
        if (mode == "kernel")
        {
            rig["z1"].UseKernelMode();
            rig["z2"].UseKernelMode();
        }

        rig["z1"].Start();
        rig["z2"].Start(new Dictionary<string, string> { ["NB_ENABLE_EXPERIMENTAL_LAZY_CONN"] = "true" });

        rig.WaitUntil(() => IsIdle(rig["z1"], "z2") && IsIdle(rig["z2"], "z1"), Registered, "both agents holding the other Idle", () => MeshTests.Diagnostics(rig, names));
        var ip2 = rig["z2"].OverlayIp!;
        var ip1 = rig["z1"].OverlayIp!;
        var summary = rig["z1"].StatusText();
        Assert.Contains("on (idle after 20s)", summary, StringComparison.Ordinal);
        Assert.Contains("0/1 connected, 1 idle", summary, StringComparison.Ordinal);

        // Idle means idle: a while later, still no attempt (no offer went out, so the other side is Idle too).
        Thread.Sleep(3000);
        Assert.True(IsIdle(rig["z1"], "z2") && IsIdle(rig["z2"], "z1"), "both still Idle without traffic");

        // One echo request, one chance: the reply proves the first packet was staged and delivered, not dropped.
        var clock = Stopwatch.StartNew();
        var first = rig["z1"].Namespace.TryExec($"ping -c 1 -W 15 {ip2}", TimeSpan.FromSeconds(30));
        Assert.True(first.ExitCode == 0, $"the first packet to the idle peer was not answered:\n{first.Output}\n{MeshTests.Diagnostics(rig, names)}");
        rig.Log($"{mode}{(relayed ? " relayed" : "")}: first packet to an idle peer answered in {RoundTrip(first.Output)} ms (ping returned after {clock.ElapsedMilliseconds} ms)");
        var type = relayed ? "Relayed" : "P2P";
        rig.WaitUntil(() => rig["z1"].IsConnected("z2", type) && rig["z2"].IsConnected("z1", type), TimeSpan.FromSeconds(30), $"both Connected {type} after the first packet", () => MeshTests.Diagnostics(rig, names));
        rig.Log(rig["z1"].StatusText());

        // No traffic for the inactivity timeout (20 s): both go back to Idle (z1 on its timer, z2 on z1's GO_IDLE).
        rig.WaitUntil(() => IsIdle(rig["z1"], "z2") && IsIdle(rig["z2"], "z1"), TimeSpan.FromSeconds(90), "both Idle again after 20 s without traffic", () => MeshTests.Diagnostics(rig, names));
        Assert.Contains("no traffic for", Reason(rig["z1"], "z2") + Reason(rig["z2"], "z1"), StringComparison.Ordinal);

        // The closed connection opens again, this time from the other side.
        var again = rig["z2"].Namespace.TryExec($"ping -c 1 -W 15 {ip1}", TimeSpan.FromSeconds(30));
        Assert.True(again.ExitCode == 0, $"the first packet after idling was not answered:\n{again.Output}\n{MeshTests.Diagnostics(rig, names)}");
        rig.Log($"{mode}{(relayed ? " relayed" : "")}: woken again from the other side, first reply in {RoundTrip(again.Output)} ms");
        rig.WaitUntil(() => rig["z1"].IsConnected("z2") && rig["z2"].IsConnected("z1"), TimeSpan.FromSeconds(30), "both Connected again", () => MeshTests.Diagnostics(rig, names));
    }

    /// <summary>
    /// Benchmark (MODULAR_BENCH=1): the first reply from an idle peer (wake-up, path, handshake, the staged packet
    /// and its answer) against the round trip of the same tunnel once connected, in one run. Prints; asserts only
    /// that every first packet was answered.
    /// </summary>
    [SkippableTheory]
    [InlineData("userspace")]
    [InlineData("kernel")]
    public void First_reply_of_an_idle_peer_vs_a_connected_one(string mode)
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MODULAR_BENCH") == "1", "benchmark: set MODULAR_BENCH=1");
        MeshRig.RequirePrerequisites();
        using var rig = new MeshRig(output, mode == "kernel" ? "yk" : "yu");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["y1", "y2"];
        foreach (var name in names)
        {
            rig.AddAgent(name).WriteConfig(key, "[features]\nlazy_connections = true\ninactivity_timeout = \"3s\"");
            if (mode == "kernel")
            {
                rig[name].UseKernelMode();
            }

            rig[name].Start();
        }

        var idle = new List<double>();
        var connected = new List<double>();
        for (var round = 0; round < 8; round++)
        {
            rig.WaitUntil(() => IsIdle(rig["y1"], "y2") && IsIdle(rig["y2"], "y1"), TimeSpan.FromSeconds(60), "both Idle", () => MeshTests.Diagnostics(rig, names));
            var ip2 = rig["y2"].OverlayIp!;
            var first = rig["y1"].Namespace.TryExec($"ping -c 1 -W 15 {ip2}", TimeSpan.FromSeconds(30));
            Assert.True(first.ExitCode == 0, $"round {round}: the first packet was not answered\n{first.Output}");
            idle.Add(double.Parse(RoundTrip(first.Output), System.Globalization.CultureInfo.InvariantCulture));
            var warm = rig["y1"].Namespace.TryExec($"ping -c 5 -i 0.2 -W 2 {ip2}", TimeSpan.FromSeconds(30));
            connected.AddRange(RttPattern().Matches(warm.Output).Select(m => double.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)));
        }

        rig.Log($"{mode}: first reply from an idle peer, 8 wake-ups: median {Median(idle):F1} ms (min {idle.Min():F1}, max {idle.Max():F1}); " +
                $"connected round trip, {connected.Count} pings: median {Median(connected):F2} ms");
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count == 0 ? double.NaN : sorted[sorted.Count / 2];
    }

    private static bool IsIdle(MeshRig.Agent agent, string peer)
        => agent.Peer(peer) is { } p && p.GetProperty("state").GetString() == "Idle";

    private static string Reason(MeshRig.Agent agent, string peer)
        => agent.Peer(peer) is { } p && p.GetProperty("reason").GetString() is { } reason ? reason : "";

    private static string RoundTrip(string pingOutput)
        => RttPattern().Match(pingOutput) is { Success: true } m ? m.Groups[1].Value : "?";

    [GeneratedRegex(@"time=([0-9.]+) ms", RegexOptions.CultureInvariant)]
    private static partial Regex RttPattern();
}
