using System.Diagnostics;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>A server and three agents in namespaces: connect, ping, remove a peer, restart the server.</summary>
public sealed class MeshTests(ITestOutputHelper output)
{
    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(90);
    internal static readonly TimeSpan FirstPingTimeout = TimeSpan.FromSeconds(20);

    [SkippableFact]
    public void Three_agents_connect_p2p_ping_survive_a_server_restart_and_lose_a_removed_peer()
    {
        MeshRig.RequirePrerequisites();
        Prerequisites.RequireTool("wg");
        using var rig = new MeshRig(output, "m");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["a1", "a2", "a3"];
        foreach (var name in names)
        {
            rig.AddAgent(name).WriteConfig(key, "[proxy]\nkind = \"udp\"");
        }

        var clock = Stopwatch.StartNew();
        foreach (var name in names)
        {
            rig[name].Start();
        }

        rig.WaitUntil(
            () => names.All(a => names.Where(b => b != a).All(b => rig[a].IsConnected(b, "P2P"))),
            ConnectTimeout,
            "all three agents Connected P2P to each other",
            () => Diagnostics(rig, names));
        rig.Log($"modular up -> all Connected (3 agents): {clock.Elapsed.TotalSeconds:F1} s");
        rig.Log(rig["a1"].StatusText());

        var ips = names.ToDictionary(n => n, n => rig[n].OverlayIp ?? throw new InvalidOperationException($"{n} has no overlay IP"));
        // Under load a freshly Connected path has been seen to need a few more seconds before the
        // first echo comes back (one run in about five): allow it a bounded settle time, then every
        // later ping must answer at once.
        foreach (var (from, to) in new[] { ("a1", "a2"), ("a2", "a3"), ("a3", "a1") })
        {
            rig.WaitUntil(() => rig[from].Ping(ips[to]), FirstPingTimeout, $"{from} -> {to} across the overlay", () => Diagnostics(rig, names));
        }

        Assert.True(rig["a1"].Ping(ips["a2"]), "a1 -> a2 again, at once");
        WgShowWorksAndWgSetIsRefused(rig, rig["a1"], rig["a2"]);

        // The server goes away: tunnels stay; it comes back: agents resync.
        rig.KillServer();
        rig.WaitUntil(() => rig["a1"].Status() is { } s && !s.GetProperty("management").GetProperty("connected").GetBoolean(), TimeSpan.FromSeconds(60), "a1 noticing the server is gone");
        Assert.True(rig["a1"].Ping(ips["a2"]), "the tunnel a1 -> a2 works while the server is down");
        rig.StartServer();
        rig.WaitUntil(
            () => names.All(n => rig[n].Status() is { } s && s.GetProperty("management").GetProperty("connected").GetBoolean()),
            ConnectTimeout,
            "every agent logged in again after the server restart",
            () => Diagnostics(rig, names));
        Assert.True(rig["a1"].IsConnected("a2", "P2P"));
        Assert.True(rig["a2"].Ping(ips["a1"]), "a2 -> a1 after the server restart");

        // A removed peer leaves everyone's map within one sync, and its tunnel goes with it.
        rig.ServerCli("peers remove a3");
        rig.WaitUntil(() => rig["a1"].Peer("a3") is null && rig["a2"].Peer("a3") is null, TimeSpan.FromSeconds(30), "a3 gone from a1 and a2", () => Diagnostics(rig, names));
        Assert.False(rig["a1"].Ping(ips["a3"], count: 2), "no tunnel to the removed peer");
        Assert.True(rig["a1"].Ping(ips["a2"]), "the remaining peers are undisturbed");
        rig.WaitUntil(() => rig["a3"].Status() is { } s && s.GetProperty("peers").GetArrayLength() == 0, TimeSpan.FromSeconds(30), "the removed agent dropping its own peers");

        // Stopping an agent destroys its interface.
        var a1Interface = rig["a1"].Interface;
        rig["a1"].Stop();
        Assert.DoesNotContain(a1Interface, rig["a1"].Namespace.Exec("ip -o link"), StringComparison.Ordinal);
        Assert.Contains(AgentLog.StoppingMarker, rig["a1"].Log, StringComparison.Ordinal);
        Assert.Empty(AgentLog.ProblemsWhileStopping(rig["a1"].Log)); // a clean stop (connected to management and signal) warns about nothing

        // The removed agent said so once (with what to do), not once per retry.
        var removedReports = rig["a3"].Log.Split('\n').Where(l => l.Contains("re-register it with a setup key", StringComparison.Ordinal) && l.Contains("ERR]", StringComparison.Ordinal)).ToList();
        Assert.True(removedReports.Count == 1, $"a3 reported its removal {removedReports.Count} times:\n{string.Join("\n", removedReports)}");
    }

    [SkippableFact]
    public void Two_agents_in_kernel_mode_connect_p2p_through_wireguard_go_and_remove_it_on_stop()
    {
        MeshRig.RequirePrerequisites();
        Prerequisites.RequireTool("wireguard-go");
        using var rig = new MeshRig(output, "k");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["k1", "k2"];
        foreach (var name in names)
        {
            var agent = rig.AddAgent(name);
            agent.WriteConfig(key, "[proxy]\nkind = \"udp\"");
            File.WriteAllText(agent.ConfigPath, File.ReadAllText(agent.ConfigPath).Replace("mode = \"userspace\"", "mode = \"kernel\"", StringComparison.Ordinal));
            agent.Start();
        }

        rig.WaitUntil(() => rig["k1"].IsConnected("k2", "P2P") && rig["k2"].IsConnected("k1", "P2P"), ConnectTimeout, "k1 and k2 Connected P2P", () => Diagnostics(rig, names));
        Assert.True(rig["k1"].Ping(rig["k2"].OverlayIp!), "k1 -> k2 over wireguard-go");
        var peer = rig["k1"].Peer("k2")!.Value;
        Assert.Equal("host 198.18.0.3:51821", peer.GetProperty("remote_candidate").GetString());

        rig["k1"].Stop();
        Assert.DoesNotContain(rig["k1"].Interface, rig["k1"].Namespace.Exec("ip -o link"), StringComparison.Ordinal);
        var left = Shell.TryRun("ip", $"netns pids {rig["k1"].Namespace.Name}").Output
            .Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(pid => File.Exists($"/proc/{pid}/comm") ? File.ReadAllText($"/proc/{pid}/comm").Trim() : "")
            .Where(name => name.StartsWith("wireguard-go", StringComparison.Ordinal));
        Assert.Empty(left); // the agent stopped the wireguard-go it owned
    }

    /// <summary>
    /// The userspace agent serves its interface's UAPI socket read-only: the stock `wg` shows the peer
    /// with a handshake and traffic (after the pings), `wg set` is refused and logged, nothing changes.
    /// </summary>
    private static void WgShowWorksAndWgSetIsRefused(MeshRig rig, MeshRig.Agent agent, MeshRig.Agent peer)
    {
        var peerKey = peer.Status()!.Value.GetProperty("public_key").GetString()!;
        var show = agent.Namespace.TryExec($"wg show {agent.Interface}");
        rig.Log(show.Output);
        Assert.True(show.ExitCode == 0, $"wg show {agent.Interface}: {show.Error}");
        var peerSection = show.Output[show.Output.IndexOf($"peer: {peerKey}", StringComparison.Ordinal)..];
        Assert.Contains("latest handshake:", peerSection, StringComparison.Ordinal);
        var transfer = System.Text.RegularExpressions.Regex.Match(peerSection, @"transfer: ([0-9.]+) \S+ received, ([0-9.]+) \S+ sent");
        Assert.True(transfer.Success, "wg show has no transfer line for the peer");
        Assert.True(double.Parse(transfer.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) > 0, "nothing received from the peer");
        Assert.True(double.Parse(transfer.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture) > 0, "nothing sent to the peer");

        var dump = agent.Namespace.TryExec($"wg show {agent.Interface} dump");
        Assert.True(dump.ExitCode == 0 && dump.Output.Contains(peerKey, StringComparison.Ordinal), "wg show dump lists the peer");
        var showconf = agent.Namespace.TryExec($"wg showconf {agent.Interface}"); // holds the private key: never printed
        Assert.True(showconf.ExitCode == 0 && showconf.Output.Contains($"PublicKey = {peerKey}", StringComparison.Ordinal), "wg showconf lists the peer");

        var set = agent.Namespace.TryExec($"wg set {agent.Interface} listen-port 1");
        Assert.NotEqual(0, set.ExitCode);
        Assert.Contains("Operation not permitted", set.Error, StringComparison.Ordinal);
        rig.WaitUntil(
            () => agent.Log.Contains("the agent owns this interface's configuration; change it through management", StringComparison.Ordinal),
            TimeSpan.FromSeconds(10),
            "the refused wg set in the agent's log");
        Assert.Single(agent.Log.Split('\n'), line => line.Contains("the agent owns this interface's configuration", StringComparison.Ordinal)); // one line per refused request
        Assert.Equal("51820", agent.Namespace.Exec($"wg show {agent.Interface} listen-port").Trim());
    }

    internal static string Diagnostics(MeshRig rig, IEnumerable<string> names)
        => string.Join("\n", names.Select(n => $"--- {n} status:\n{rig[n].StatusText()}\n--- {n} log tail:\n{Tail(rig[n].Log, 40)}\n--- output:\n{Tail(rig[n].Output, 10)}"))
           + $"\n--- server:\n{Tail(rig.ServerOutput, 30)}";

    private static string Tail(string text, int lines) => string.Join("\n", text.Split('\n').TakeLast(lines));
}
