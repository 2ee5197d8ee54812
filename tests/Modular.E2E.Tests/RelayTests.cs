using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>An agent behind NAT and one behind a firewall: relayed first, P2P once the block is lifted.</summary>
public sealed class RelayTests(ITestOutputHelper output)
{
    [SkippableFact]
    public void Nat_and_firewall_peers_connect_relayed_then_move_to_p2p_when_the_block_is_lifted()
    {
        MeshRig.RequirePrerequisites();
        using var rig = new MeshRig(output, "r");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        var natted = rig.AddAgentBehindNat("n1");
        var walled = rig.AddAgent("f1");
        walled.BlockUdpWith(natted.PublicIp);
        natted.WriteConfig(key, "[proxy]\nkind = \"udp\"");
        walled.WriteConfig(key, "[proxy]\nkind = \"udp\"");
        natted.Start();
        walled.Start();
        string[] names = ["n1", "f1"];

        rig.WaitUntil(() => natted.IsConnected("f1", "Relayed") && walled.IsConnected("n1", "Relayed"), TimeSpan.FromSeconds(120),
            "both Connected through the relay", () => MeshTests.Diagnostics(rig, names));
        var natIp = natted.OverlayIp!;
        var wallIp = walled.OverlayIp!;
        // Bounded retries: one run in four lost the very first pings right after both reported Connected (see the report).
        rig.WaitUntil(() => natted.Ping(wallIp, count: 2), TimeSpan.FromSeconds(30), "n1 -> f1 through the relay", () => MeshTests.Diagnostics(rig, names));
        rig.WaitUntil(() => walled.Ping(natIp, count: 2), TimeSpan.FromSeconds(30), "f1 -> n1 through the relay", () => MeshTests.Diagnostics(rig, names));
        // Issue 13 item 7: these agents bind with the signed form (MAC under the per-token secret, plus a counter),
        // through the NAT too; the relay logs every session that uses the old, replayable form.
        Assert.DoesNotContain("old, unsigned Bind form", rig.ServerOutput, StringComparison.Ordinal);
        var peer = walled.Peer("n1")!.Value;
        Assert.Equal("udp", peer.GetProperty("proxy").GetString());
        Assert.Equal($"{MeshRig.ServerIp}:33080", peer.GetProperty("relay").GetString());
        rig.Log(walled.StatusText());

        walled.UnblockUdp();
        rig.WaitUntil(() => natted.IsConnected("f1", "P2P") && walled.IsConnected("n1", "P2P"), TimeSpan.FromSeconds(150),
            "both moved to P2P after the block was lifted", () => MeshTests.Diagnostics(rig, names));
        Assert.True(natted.Ping(wallIp), "n1 -> f1 directly");
        Assert.True(walled.Ping(natIp), "f1 -> n1 directly");
        rig.Log(natted.StatusText());
    }
}
