using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// Operator finding (issue 13): a machine cloned with its state_dir runs a second agent with the same identity.
/// The server refuses the copy and tells the original; the original keeps its peers and says so in status.
/// </summary>
public sealed class TwoAgentsOneIdentityE2ETests(ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(120);

    [SkippableFact]
    public void Two_agents_one_identity_a_cloned_state_dir_is_refused_and_the_original_keeps_working_and_says_so()
    {
        MeshRig.RequirePrerequisites();
        using var rig = new MeshRig(output, "i");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        var original = rig.AddAgent("i1");
        var other = rig.AddAgent("i2");
        original.WriteConfig(key);
        other.WriteConfig(key);
        original.Start();
        other.Start();
        rig.WaitUntil(() => original.IsConnected("i2") && other.IsConnected("i1"), Timeout, "i1 and i2 Connected", () => original.StatusText() + other.StatusText());
        var originalIp = original.OverlayIp!;
        var otherIp = other.OverlayIp!;
        rig.WaitUntil(() => original.Ping(otherIp), Timeout, "i1 -> i2 across the overlay");

        // The copy: another namespace, the original's state_dir (its key and registration marker).
        var copy = rig.AddAgent("i3");
        PluginFixtures.CopyDirectory(Path.Combine(rig.Root, "i1"), Path.Combine(rig.Root, "i3"));
        copy.WriteConfig(key);
        copy.Start();

        rig.WaitUntil(
            () => copy.Status() is { } s && s.GetProperty("management").GetProperty("error").GetString() is { } e
                && e.Contains("another agent with this identity is connected", StringComparison.Ordinal),
            Timeout,
            "the copy refused by management, saying why",
            () => copy.StatusText() + copy.Log);
        rig.WaitUntil(
            () => original.Status() is { } s && s.GetProperty("management").GetProperty("connected").GetBoolean()
                && s.GetProperty("management").GetProperty("error").GetString() is { } e && e.Contains("was refused", StringComparison.Ordinal),
            Timeout,
            "the original told of the copy, still connected",
            () => original.StatusText());
        Assert.Contains("another agent with this identity", original.StatusText(), StringComparison.Ordinal);
        Assert.Contains("another agent with this identity", copy.Log, StringComparison.Ordinal);

        // The copy never got a map, so it took no peer over: the original's tunnel carries traffic both ways.
        Assert.Equal(0, copy.Status()!.Value.GetProperty("peers").GetArrayLength());
        Assert.True(original.Ping(otherIp), "i1 -> i2 with the copy running");
        Assert.True(other.Ping(originalIp), "i2 -> i1 with the copy running");

        copy.Stop();
        Assert.True(original.Ping(otherIp), "i1 -> i2 after the copy stopped");
        Assert.True(other.Ping(originalIp), "i2 -> i1 after the copy stopped");
        Assert.True(original.IsConnected("i2"), original.StatusText());
    }
}
