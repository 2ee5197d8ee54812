using Modular.Testing;

namespace Modular.Composition.Tests;

/// <summary>
/// The plugin contract's public API is recorded (PublicAPI.Shipped.txt / Unshipped.txt): a change that is not
/// recorded must fail the build, so it always shows in review.
/// </summary>
public sealed class ContractTrackingTests : IDisposable
{
    private readonly string _work = Path.Combine(Path.GetTempPath(), $"modular-contract-{Guid.NewGuid():N}");

    public void Dispose()
    {
        if (Directory.Exists(_work))
        {
            Directory.Delete(_work, recursive: true);
        }
    }

    [Fact]
    public void Removing_or_adding_a_public_member_without_recording_it_fails_the_build()
    {
        // A copy of the contract project (with the repo's build settings) so the tree is never touched.
        var root = PluginFixtures.RepoRoot;
        foreach (var file in new[] { "Directory.Build.props", "Directory.Packages.props", "global.json" })
        {
            Directory.CreateDirectory(_work);
            File.Copy(Path.Combine(root, file), Path.Combine(_work, file));
        }

        var source = Path.Combine(root, "core", "Modular.Abstractions");
        var project = Path.Combine(_work, "core", "Modular.Abstractions");
        foreach (var file in Directory.GetFiles(source, "*", SearchOption.AllDirectories))
        {
            var relative = Path.GetRelativePath(source, file);
            if (relative.StartsWith("bin", StringComparison.Ordinal) || relative.StartsWith("obj", StringComparison.Ordinal))
            {
                continue;
            }

            var target = Path.Combine(project, relative);
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }

        // Remove one recorded member (nothing inside the assembly uses it) and add one unrecorded member.
        var key = Path.Combine(project, "WireGuard", "WgKey.cs");
        var keyText = File.ReadAllText(key);
        const string removed = "public static WgKey FromHex(string hex) => new(Convert.FromHexString(hex));";
        Assert.Contains(removed, keyText, StringComparison.Ordinal);
        File.WriteAllText(key, keyText.Replace(removed, "", StringComparison.Ordinal));
        var duration = Path.Combine(project, "Config", "ConfigDuration.cs");
        var durationText = File.ReadAllText(duration);
        const string lastBrace = "\n}";
        File.WriteAllText(duration, durationText[..durationText.LastIndexOf(lastBrace, StringComparison.Ordinal)]
            + "\n    /// <summary>Unrecorded.</summary>\n    public static int Unrecorded => 0;\n}\n");

        var result = Shell.TryRun(PluginFixtures.DotnetPath(),
            $"build \"{Path.Combine(project, "Modular.Abstractions.csproj")}\" -c Release --artifacts-path \"{Path.Combine(_work, "artifacts")}\" --disable-build-servers -nologo",
            TimeSpan.FromMinutes(5),
            new Dictionary<string, string> { ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1", ["DOTNET_NOLOGO"] = "1" });

        var output = result.Output + result.Error;
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("error RS0017", output, StringComparison.Ordinal);
        Assert.Contains("WgKey.FromHex(string! hex)", output, StringComparison.Ordinal);
        Assert.Contains("error RS0016", output, StringComparison.Ordinal);
        Assert.Contains("ConfigDuration.Unrecorded.get", output, StringComparison.Ordinal);
    }
}
