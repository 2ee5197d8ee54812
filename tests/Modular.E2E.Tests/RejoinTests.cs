using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// Issue 13, "a removed peer cannot rejoin": after `peers remove`, the agent with the same setup key stays out (and says
/// what to do), and with a new key in its config it registers again, with no file to delete.
/// </summary>
public sealed class RejoinTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    [SkippableFact]
    public void A_removed_peer_cannot_rejoin_with_the_same_key_and_rejoins_with_a_new_one()
    {
        MeshRig.RequirePrerequisites();
        using var rig = new MeshRig(output, "j");
        rig.StartServer();
        var first = rig.CreateSetupKey();
        var agent = rig.AddAgent("j1");
        agent.WriteConfig(first, "[proxy]\nkind = \"udp\"");
        agent.Start();
        rig.WaitUntil(() => ManagementConnected(agent), Timeout, "j1 registered and logged in", () => agent.Log);
        var marker = File.ReadAllText(Path.Combine(rig.Root, "j1", "registered"));
        Assert.DoesNotContain(first, marker, StringComparison.Ordinal); // only a hash of the key is kept

        // Removed: refused, with what to do.
        rig.ServerCli("peers remove j1");
        rig.WaitUntil(() => ManagementError(agent)?.Contains("re-register it with a setup key", StringComparison.Ordinal) == true, Timeout, "j1 refused after its removal", () => agent.Log);

        // The same (reusable, still valid) key after a restart: still refused, never registered again.
        agent.Stop();
        agent.Start();
        rig.WaitUntil(() => ManagementError(agent)?.Contains("re-register it with a setup key", StringComparison.Ordinal) == true, Timeout, "j1 refused again with the same key", () => agent.Log);
        Assert.DoesNotContain("j1", rig.ServerCli("peers list"), StringComparison.Ordinal);
        Assert.Equal(1, Count(agent.Log, "Registered with"));

        // A new key in the config: it registers again, saying so once, with nothing deleted by hand.
        var second = rig.CreateSetupKey();
        agent.Stop();
        agent.WriteConfig(second, "[proxy]\nkind = \"udp\"");
        agent.Start();
        rig.WaitUntil(() => ManagementConnected(agent), Timeout, "j1 registered again with the new key", () => agent.Log);
        Assert.Contains("j1", rig.ServerCli("peers list"), StringComparison.Ordinal);
        Assert.Equal(1, Count(agent.Log, "registering again with the new key"));
        Assert.Equal(2, Count(agent.Log, "Registered with"));
        Assert.DoesNotContain(second, File.ReadAllText(Path.Combine(rig.Root, "j1", "registered")), StringComparison.Ordinal);
        Assert.DoesNotContain(second, agent.Log, StringComparison.Ordinal);
    }

    private static bool ManagementConnected(MeshRig.Agent agent)
        => agent.Status() is { } s && s.GetProperty("management").GetProperty("connected").GetBoolean();

    private static string? ManagementError(MeshRig.Agent agent)
        => agent.Status() is { } s && s.GetProperty("management").GetProperty("error").ValueKind == System.Text.Json.JsonValueKind.String
            ? s.GetProperty("management").GetProperty("error").GetString()
            : null;

    private static int Count(string text, string what) => text.Split('\n').Count(l => l.Contains(what, StringComparison.Ordinal));
}
