using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// Issue 16, pause/resume: a pair relayed because an nft rule in b's namespace drops UDP with a goes relay -> P2P when
/// the rule is lifted and P2P -> relay when it is put back, for each proxy (bind: userspace with `kind = "auto"`; udp and
/// ebpf: kernel mode, wireguard-go). On the switch to P2P each side keeps its relayed proxy until the direct path
/// carries something back (the other side may still send through the relay), then closes it: the peer ends P2P with
/// no proxy in `status` and none listed under the plugin. Blocked again, the direct path goes silent, the peer is
/// asked for a new handshake, reconnects, its checks fail and it is relayed again through a new proxy of that kind.
/// Ping passes both ways in each phase.
/// </summary>
public sealed class RelayPauseResumeTests(ITestOutputHelper output)
{
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
        rig.StartServer();
        var key = rig.CreateSetupKey();
        var a = rig.AddAgent($"{prefix}1");
        var b = rig.AddAgent($"{prefix}2");
        string[] names = [a.Name, b.Name];
        foreach (var agent in new[] { a, b })
        {
            agent.WriteConfig(key, proxyConfig);
            if (kernelMode)
            {
                agent.UseKernelMode();
            }
        }

        b.BlockUdpWith(a.UnderlayIp);
        a.Start();
        b.Start();

        // Relayed: the direct path is blocked.
        WaitOnPath(rig, a, b, names, "Relayed", "relayed while blocked");
        Assert.Equal(proxy, a.Peer(b.Name)!.Value.GetProperty("proxy").GetString());
        Assert.Equal(proxy, b.Peer(a.Name)!.Value.GetProperty("proxy").GetString());

        // Resume the direct path: both move to P2P and, once it is proven, give up their proxies.
        b.UnblockUdp();
        WaitOnPath(rig, a, b, names, "P2P", "P2P after the block was lifted", TimeSpan.FromSeconds(150));
        rig.WaitUntil(
            () => a.Peer(b.Name) is { } pa && pa.GetProperty("proxy").GetString() is null && b.Peer(a.Name) is { } pb && pb.GetProperty("proxy").GetString() is null,
            TimeSpan.FromSeconds(90),
            "both released their relayed proxies once the direct path was proven",
            () => MeshTests.Diagnostics(rig, names));
        Assert.Empty(RelayProxyTests.RelayedPeersOf(a, proxy));
        Assert.Empty(RelayProxyTests.RelayedPeersOf(b, proxy));
        Assert.Contains("the direct path is proven; closing the relayed connection", a.Log + b.Log, StringComparison.Ordinal);

        // Pause it again: the silent direct path is given up and the pair is relayed again, through the same kind of proxy.
        b.BlockUdpWith(a.UnderlayIp);
        WaitOnPath(rig, a, b, names, "Relayed", "relayed again once the block was back", TimeSpan.FromSeconds(240));
        Assert.Equal(proxy, a.Peer(b.Name)!.Value.GetProperty("proxy").GetString());
        Assert.Equal(proxy, b.Peer(a.Name)!.Value.GetProperty("proxy").GetString());
        rig.Log(a.StatusText());
    }

    /// <summary>Waits until both are Connected on <paramref name="type"/> and ping passes both ways.</summary>
    private static void WaitOnPath(MeshRig rig, MeshRig.Agent a, MeshRig.Agent b, string[] names, string type, string what, TimeSpan? timeout = null)
    {
        rig.WaitUntil(() => a.IsConnected(b.Name, type) && b.IsConnected(a.Name, type), timeout ?? TimeSpan.FromSeconds(120), $"both {what}",
            () => MeshTests.Diagnostics(rig, names));
        var aIp = a.OverlayIp!;
        var bIp = b.OverlayIp!;
        rig.WaitUntil(() => a.Ping(bIp, count: 2), TimeSpan.FromSeconds(30), $"{a.Name} -> {b.Name} {what}", () => MeshTests.Diagnostics(rig, names));
        rig.WaitUntil(() => b.Ping(aIp, count: 2), TimeSpan.FromSeconds(30), $"{b.Name} -> {a.Name} {what}", () => MeshTests.Diagnostics(rig, names));
        Assert.True(a.IsConnected(b.Name, type), $"{a.Name} still {type} after the pings");
    }
}
