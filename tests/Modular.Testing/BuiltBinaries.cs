namespace Modular.Testing;

/// <summary>The repository and the programs its build produced, as the tests run them.</summary>
public static class BuiltBinaries
{
    /// <summary>
    /// Set by scripts/test to the agent layout scripts/publish made: a native-AOT `modular`
    /// beside the managed `modulard`. Unset, the tests run this build's managed `modular`.
    /// </summary>
    public const string AgentDirVariable = "MODULAR_AGENT_DIR";

    /// <summary>
    /// Set by `scripts/bench engine-compare` to another build's hosts/Modular.Server output folder, so this
    /// tree's tests can drive that build's server. Unset, the tests run this build's `modular-server`.
    /// </summary>
    public const string ServerDirVariable = "MODULAR_SERVER_DIR";

    /// <summary>The folder holding Modular.sln.</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    /// <summary>The configuration this test assembly was built in (Release or Debug).</summary>
    public static string Configuration { get; } = AppContext.BaseDirectory.Contains("/Release/", StringComparison.Ordinal) ? "Release" : "Debug";

    /// <summary>The published agent folder when <see cref="AgentDirVariable"/> names one, else null.</summary>
    public static string? InstalledAgentDir { get; } = Environment.GetEnvironmentVariable(AgentDirVariable) is { Length: > 0 } dir ? Path.GetFullPath(dir) : null;

    /// <summary>The `modular` the tests run (see <see cref="AgentDirVariable"/>).</summary>
    public static string Agent { get; } = InstalledAgentDir is { } dir ? Path.Combine(dir, "modular") : Host("Modular.Agent", "modular");

    public static string Server { get; } = Environment.GetEnvironmentVariable(ServerDirVariable) is { Length: > 0 } dir
        ? Path.Combine(Path.GetFullPath(dir), "modular-server")
        : Host("Modular.Server", "modular-server");

    public static string Wg => Host("Modular.Wg", "modular-wg");

    /// <summary>hosts/&lt;project&gt;/bin/&lt;configuration&gt;/net10.0/&lt;name&gt;.</summary>
    public static string Host(string project, string name) => Path.Combine(RepoRoot, "hosts", project, "bin", Configuration, "net10.0", name);

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Modular.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException($"no Modular.sln above {AppContext.BaseDirectory}");
    }
}
