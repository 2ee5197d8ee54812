using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// Issue 16, pause/resume, relay restart and leaked sockets, per proxy (bind: userspace with `kind = "auto"`; udp and
/// ebpf: kernel mode, wireguard-go), in one rig run each. The server runs split (<see cref="FaultTests.SplitServer"/>),
/// so the relay is a process of its own. A pair relayed because an nft rule in b's namespace drops UDP with a: the relay
/// is killed (SIGKILL) under it and started again, and relayed ping answers within 30 s of its return. Then the rule is
/// lifted: relay -> P2P. On the switch each side keeps its relayed proxy until the direct path carries something back
/// (the other side may still send through the relay), then closes it: the peer ends P2P with no proxy in `status` and
/// none listed under the plugin, and a holds no UDP or TCP socket and no eBPF object more than it did up alone before
/// the relayed phase (its own /proc/&lt;pid&gt;/fd). Blocked again, the direct path goes silent, the peer is asked for a
/// new handshake, reconnects, its checks fail and it is relayed again through a new proxy of that kind. Ping passes
/// both ways in each phase. Redirect: the switch to P2P that keeps the proxy is what calls RedirectAs (see
/// <see cref="AssertRedirected"/>).
/// </summary>
/// <remarks>
/// The agents run with shorter liveness timers (the MODULAR_TEST_PEER_TIMINGS test hook, <see cref="Timings"/>), so the
/// two path changes take seconds instead of the defaults' ~40 s and ~110 s; what each phase must show is unchanged.
/// </remarks>
public sealed class RelayPauseResumeTests(ITestOutputHelper output)
{
    /// <summary>
    /// The daemon's environment: a relayed peer tries the direct path every 10 s (default 30 s); keepalives every 5 s
    /// (25 s), so a peer silent for 15 s (90 s) is asked for a handshake and reconnected after 6 s more (12 s).
    /// </summary>
    private static readonly Dictionary<string, string> Timings = new()
    {
        ["MODULAR_TEST_HOOKS"] = "1",
        ["MODULAR_TEST_PEER_TIMINGS"] = "recheck=10s,keepalive=5s,silent=15s,probe=6s",
    };

    [SkippableTheory]
    [InlineData("pr", "", false, "bind")]
    [InlineData("pu", "[proxy]\nkind = \"udp\"", true, "udp")]
    [InlineData("pe", "[proxy]\nkind = \"ebpf\"", true, "ebpf")]
    public void A_relayed_pair_goes_to_p2p_when_the_block_is_lifted_and_back_to_the_relay_when_it_returns(string prefix, string proxyConfig, bool kernelMode, string proxy)
    {
        MeshRig.RequirePrerequisites();
        if (kernelMode)
        {
            Prerequisites.RequireTool("wireguard-go");
        }

        if (proxy == "ebpf")
        {
            Prerequisites.RequireTool("bpftool");
        }

        using var rig = new MeshRig(output, prefix);
        using var server = new FaultTests.SplitServer(rig); // the relay in a process of its own, to kill it alone
        server.StartAll();
        var key = rig.CreateSetupKey();
        var a = rig.AddAgent($"{prefix}1");
        var b = rig.AddAgent($"{prefix}2");
        string[] names = [a.Name, b.Name];
        string Diagnostics() => MeshTests.Diagnostics(rig, names) + server.Diagnostics();
        foreach (var agent in new[] { a, b })
        {
            agent.WriteConfig(key, proxyConfig);
            if (kernelMode)
            {
                agent.UseKernelMode();
            }
        }

        b.BlockUdpWith(a.UnderlayIp);

        // a's descriptors before the relayed phase: a up alone (logged in, on signal, its listeners open), taken once
        // two samples 2 s apart agree, so what the runtime and the engine open once at start is in the baseline.
        a.Start(Timings);
        rig.WaitUntil(() => a.Status() is { } s && s.GetProperty("management").GetProperty("connected").GetBoolean() && s.GetProperty("signal").GetProperty("connected").GetBoolean(),
            TimeSpan.FromSeconds(120), $"{a.Name} logged in and on signal", () => $"{a.StatusText()}\n{a.Output}\n{Diagnostics()}");
        var pid = a.Process!.Id;
        var before = AgentDescriptors.Of(pid);
        rig.WaitUntil(
            () =>
            {
                Thread.Sleep(TimeSpan.FromSeconds(2));
                var again = AgentDescriptors.Of(pid);
                var settled = again.Held.SequenceEqual(before.Held);
                before = again;
                return settled;
            },
            TimeSpan.FromSeconds(30),
            $"{a.Name}'s sockets settled before {b.Name} joins",
            () => string.Join(' ', before.Held));
        rig.Log($"{a.Name} before the relayed phase: {before.All.Count} descriptors, {before.Held.Count} sockets and eBPF objects: {string.Join(' ', before.Held)}");

        // Relayed: the direct path is blocked. The phases' times go to the log (what the class costs scripts/test).
        var clock = System.Diagnostics.Stopwatch.StartNew();
        b.Start(Timings);
        WaitOnPath(rig, a, b, Diagnostics, "Relayed", "relayed while blocked");
        Assert.Equal(proxy, a.Peer(b.Name)!.Value.GetProperty("proxy").GetString());
        Assert.Equal(proxy, b.Peer(a.Name)!.Value.GetProperty("proxy").GetString());
        rig.Log($"relayed and pinging {clock.Elapsed.TotalSeconds:F0} s after {b.Name} started");
        Assert.Contains("Test hook: peer timings", a.Log, StringComparison.Ordinal);
        Assert.Contains("Test hook: peer timings", b.Log, StringComparison.Ordinal);

        // The relay dies (SIGKILL) under the relayed pair and comes back: relayed ping answers within 30 s of its return.
        server.Kill("relay");
        rig.Log("relay: killed (SIGKILL)");
        server.Start("relay");
        var restarted = System.Diagnostics.Stopwatch.StartNew();
        var bIp = b.OverlayIp!;
        rig.WaitUntil(() => a.Ping(bIp, count: 1), TimeSpan.FromSeconds(30), $"{a.Name} -> {b.Name} through the relay after its restart", Diagnostics);
        rig.Log($"relay: relayed ping answered {restarted.Elapsed.TotalSeconds:F1} s after the restart");
        WaitOnPath(rig, a, b, Diagnostics, "Relayed", "relayed after the relay restart", TimeSpan.FromSeconds(60));
        Assert.Equal(proxy, a.Peer(b.Name)!.Value.GetProperty("proxy").GetString());
        Assert.Equal(proxy, b.Peer(a.Name)!.Value.GetProperty("proxy").GetString());

        // Resume the direct path: both move to P2P and, once it is proven, give up their proxies.
        b.UnblockUdp();
        var lifted = clock.Elapsed;
        WaitOnPath(rig, a, b, Diagnostics, "P2P", "P2P after the block was lifted", TimeSpan.FromSeconds(150));
        rig.WaitUntil(
            () => a.Peer(b.Name) is { } pa && pa.GetProperty("proxy").GetString() is null && b.Peer(a.Name) is { } pb && pb.GetProperty("proxy").GetString() is null,
            TimeSpan.FromSeconds(90),
            "both released their relayed proxies once the direct path was proven",
            Diagnostics);
        Assert.Empty(RelayProxyTests.RelayedPeersOf(a, proxy));
        Assert.Empty(RelayProxyTests.RelayedPeersOf(b, proxy));
        Assert.Contains("the direct path is proven; closing the relayed connection", a.Log + b.Log, StringComparison.Ordinal);
        AssertRedirected(a, proxy);
        AssertRedirected(b, proxy);
        Assert.Contains(Redirected, a.Log + b.Log, StringComparison.Ordinal);
        rig.Log($"P2P with both proxies released {(clock.Elapsed - lifted).TotalSeconds:F0} s after the block was lifted ({clock.Elapsed.TotalSeconds:F0} s in all)");

        // Off the relay, a holds no socket or eBPF object more than before it (the relayed connections, the one killed
        // with the relay included, and the proxies are closed). Bounded: a close can finish just after the release.
        var after = AgentDescriptors.Of(pid);
        rig.WaitUntil(() => (after = AgentDescriptors.Of(pid)).Held.Count <= before.Held.Count, TimeSpan.FromSeconds(30),
            $"{a.Name}'s sockets and eBPF objects back to the {before.Held.Count} it held before the relayed phase",
            () => $"{after.DiffFrom(before)}\n{a.Namespace.TryExec("ss -uanp").Output}\n{a.Namespace.TryExec("ss -tanp").Output}");
        rig.Log($"{a.Name} off the relay: {after.DiffFrom(before)}");

        // Pause it again: the silent direct path is given up and the pair is relayed again, through the same kind of proxy.
        b.BlockUdpWith(a.UnderlayIp);
        var blocked = clock.Elapsed;
        WaitOnPath(rig, a, b, Diagnostics, "Relayed", "relayed again once the block was back", TimeSpan.FromSeconds(240));
        rig.Log($"relayed again {(clock.Elapsed - blocked).TotalSeconds:F0} s after the block returned ({clock.Elapsed.TotalSeconds:F0} s in all)");
        Assert.Equal(proxy, a.Peer(b.Name)!.Value.GetProperty("proxy").GetString());
        Assert.Equal(proxy, b.Peer(a.Name)!.Value.GetProperty("proxy").GetString());
        rig.Log(a.StatusText());
    }

    private const string Switched = "switched from the relay to P2P, keeping the relay until the direct path is proven";
    private const string Redirected = "packets still arriving through the relay reach WireGuard as from";

    /// <summary>
    /// Redirect (issue 16): the event that calls RedirectAs is the relay -> P2P switch that keeps the relayed proxy for
    /// the direct trial. Every such switch of <paramref name="agent"/> redirected its proxy (each of the three proxies
    /// counts what it hands WireGuard, so none may be skipped); udp and ebpf send as the peer's direct endpoint to the
    /// address WireGuard really receives it on, the agent's underlay address (at 127.0.0.1 wireguard-go would answer
    /// the direct endpoint from 127.0.0.1, which cannot leave lo), and none fell back for want of a raw socket.
    /// </summary>
    private static void AssertRedirected(MeshRig.Agent agent, string proxy)
    {
        var log = agent.Log;
        int Count(string what) => log.Split(what).Length - 1;
        Assert.True(Count(Switched) == Count(Redirected), $"{agent.Name}: {Count(Switched)} switches keeping the relay, {Count(Redirected)} redirects");
        Assert.DoesNotContain("cannot send as", log, StringComparison.Ordinal);
        Assert.DoesNotContain("cannot redirect", log, StringComparison.Ordinal);
        if (proxy != "bind" && Count(Redirected) > 0)
        {
            Assert.Contains($"to WireGuard at {agent.UnderlayIp}:", log, StringComparison.Ordinal);
            Assert.DoesNotContain("to WireGuard at 127.", log, StringComparison.Ordinal);
        }
    }

    /// <summary>Waits until both are Connected on <paramref name="type"/> and ping passes both ways.</summary>
    private static void WaitOnPath(MeshRig rig, MeshRig.Agent a, MeshRig.Agent b, Func<string> diagnostics, string type, string what, TimeSpan? timeout = null)
    {
        rig.WaitUntil(() => a.IsConnected(b.Name, type) && b.IsConnected(a.Name, type), timeout ?? TimeSpan.FromSeconds(120), $"both {what}", diagnostics);
        var aIp = a.OverlayIp!;
        var bIp = b.OverlayIp!;
        rig.WaitUntil(() => a.Ping(bIp, count: 2), TimeSpan.FromSeconds(30), $"{a.Name} -> {b.Name} {what}", diagnostics);
        rig.WaitUntil(() => b.Ping(aIp, count: 2), TimeSpan.FromSeconds(30), $"{b.Name} -> {a.Name} {what}", diagnostics);
        Assert.True(a.IsConnected(b.Name, type), $"{a.Name} still {type} after the pings");
    }
}
