using Microsoft.Extensions.Logging;

namespace Modular.Composition;

/// <summary>One plugin as found on disk: loaded, or why not.</summary>
/// <param name="Name">The <c>[PluginName]</c> of its factory, else its folder name.</param>
/// <param name="Kind">"proxy", "psk", "flow-sink", or "unknown" when nothing loaded.</param>
/// <param name="Version">The assembly's informational version.</param>
/// <param name="AssemblyPath">Full path of the plugin's main assembly.</param>
/// <param name="Loaded">True when its factory was composed.</param>
/// <param name="Error">Why it did not load (null when loaded).</param>
/// <param name="Description">The factory's own one-line description (null when not loaded).</param>
public sealed record PluginInfo(string Name, string Kind, string? Version, string AssemblyPath, bool Loaded, string? Error, string? Description);

/// <summary>
/// The plugins found in a plugins folder (one folder per plugin), each loaded in its own
/// load context that shares Modular.Abstractions, System.Composition and the logging
/// abstractions with the host, composed with MEF. A plugin that fails is recorded with
/// its reason and logged; the others still load.
/// </summary>
public sealed class PluginCatalog : IDisposable
{
    private PluginCatalog()
    {
    }

    /// <summary>Scans <paramref name="pluginsDirectory"/>; never throws for a bad plugin.</summary>
    public static PluginCatalog Load(string pluginsDirectory, ILogger logger)
        => throw new NotImplementedException("foundation-lib implements this");

    public IReadOnlyList<PluginInfo> Plugins => throw new NotImplementedException();

    /// <summary>Names of loaded factories of this contract, e.g. NamesOf&lt;IProxyFactory&gt;().</summary>
    public IReadOnlyList<string> NamesOf<TFactory>() => throw new NotImplementedException();

    /// <summary>
    /// The factory named <paramref name="name"/>; throws <see cref="PluginLoadException"/> with
    /// the load error if that plugin exists but failed, or listing available names if none has it.
    /// </summary>
    public TFactory Get<TFactory>(string name) => throw new NotImplementedException();

    /// <summary>All loaded factories of this contract with their names.</summary>
    public IReadOnlyList<(string Name, TFactory Factory)> All<TFactory>() => throw new NotImplementedException();

    public void Dispose()
    {
    }
}

/// <summary>A selected plugin could not be used: the message names it, its path and the reason.</summary>
public sealed class PluginLoadException : Exception
{
    public PluginLoadException()
    {
    }

    public PluginLoadException(string message)
        : base(message)
    {
    }

    public PluginLoadException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
