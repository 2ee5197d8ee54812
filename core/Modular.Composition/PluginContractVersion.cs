using Modular.Abstractions.Plugins;

namespace Modular.Composition;

/// <summary>
/// Which plugins this host can run, by the Modular.Abstractions version a plugin was built against (its
/// assembly reference; the contract's semantic version is that assembly's version). A plugin built against a
/// newer contract than the host's may use members the host lacks (a newer major may have removed or changed
/// them); one older than <see cref="MinimumSupported"/> relies on members already removed.
/// </summary>
public static class PluginContractVersion
{
    /// <summary>The contract this host implements: its Modular.Abstractions assembly version.</summary>
    public static Version Current { get; } = Normalize(typeof(IPluginFactory).Assembly.GetName().Version ?? new Version(0, 0));

    /// <summary>
    /// The oldest contract still supported: 0.1, the shape before the plugin SDK, kept working through the
    /// obsolete members of contract 1.x. Raise it when a major version removes them.
    /// </summary>
    public static Version MinimumSupported { get; } = new(0, 1, 0);

    /// <summary>Null when a plugin built against <paramref name="builtAgainst"/> can run here, else why not.</summary>
    public static string? Check(Version builtAgainst) => Check(builtAgainst, Current, MinimumSupported);

    /// <summary>The rule, for any host version (tests).</summary>
    public static string? Check(Version builtAgainst, Version host, Version minimum)
    {
        ArgumentNullException.ThrowIfNull(builtAgainst);
        var plugin = Normalize(builtAgainst);
        if (plugin.Major > host.Major)
        {
            return $"built against plugin contract {plugin}, a newer major version than this agent's {host}: update the agent or use a plugin build for contract {host.Major}.x";
        }

        if (plugin > host)
        {
            return $"built against plugin contract {plugin}, newer than this agent's {host}: update the agent";
        }

        if (plugin < minimum)
        {
            return $"built against plugin contract {plugin}, older than the oldest this agent supports ({minimum}): rebuild the plugin against contract {host}";
        }

        return null;
    }

    /// <summary>major.minor.build, the semantic version (the assembly version's revision is always 0).</summary>
    private static Version Normalize(Version version) => new(version.Major, Math.Max(version.Minor, 0), Math.Max(version.Build, 0));
}
