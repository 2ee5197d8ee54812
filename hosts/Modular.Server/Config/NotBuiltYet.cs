namespace Modular.Server.Config;

/// <summary>
/// The server.toml keys that are accepted (so files written for the design stay valid) but whose feature is not built
/// yet: the server warns about each one written, in its start log. This table is the one place that says so; the
/// issue that builds a feature deletes its row.
/// </summary>
public static class NotBuiltYet
{
    /// <summary>One accepted key that does nothing yet.</summary>
    /// <param name="Key">The dotted key as in <see cref="ServerConfig.Positions"/>.</param>
    /// <param name="Reason">What does not happen although the key asks for it.</param>
    /// <param name="Example">TOML that writes the key (tests append it to a config).</param>
    /// <param name="Applies">Whether the written value asks for the missing part (e.g. components lists "flow").</param>
    /// <param name="Effect">What the warning adds after the reason: "it has no effect" unless the feature is built in part.</param>
    public sealed record Row(string Key, string Reason, string Example, Func<ServerConfig, bool> Applies, string Effect = "it has no effect");

    public static readonly IReadOnlyList<Row> Keys =
    [
        // Empty: account.rosenpass left with issue 15's namespace matrix and rotation tests.
    ];

    /// <summary>One line per row whose key is written and asks for something (not <c>redis_url = ""</c>), e.g. "server.toml:4:1: redis_url: accepted, but not built yet: …; it has no effect".</summary>
    public static IReadOnlyList<string> Warnings(ServerConfig config)
        => [.. Keys
            .Where(row => config.Positions.ContainsKey(row.Key) && row.Applies(config))
            .Select(row => $"{config.Positions[row.Key]}: {row.Key}: accepted, but {row.Reason}; {row.Effect}")];
}
