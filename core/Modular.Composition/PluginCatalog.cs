using System.Composition;
using System.Composition.Convention;
using System.Composition.Hosting;
using System.Reflection;
using McMaster.NETCore.Plugins;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Flows;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.Security;

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
/// <remarks>
/// Folders are read in ordinal order of their names; when two plugins export the same name for
/// the same kind, the first one found keeps it and the later one is reported as a duplicate.
/// </remarks>
public sealed class PluginCatalog : IDisposable
{
    /// <summary>Kind of plugins whose factories could not be composed.</summary>
    public const string UnknownKind = "unknown";

    private static readonly (Type Contract, string Kind)[] Contracts =
    [
        (typeof(IProxyFactory), "proxy"),
        (typeof(IPresharedKeyProviderFactory), "psk"),
        (typeof(IFlowSinkFactory), "flow-sink"),
    ];

    // The host's copies of these win over any a plugin ships, so a plugin's [Export] and
    // contract types are the host's types and its exports are found.
    private static readonly Type[] SharedTypes =
    [
        typeof(IPluginFactory),
        typeof(ILogger),
        typeof(ExportAttribute),
        typeof(CompositionContext),
        typeof(CompositionHost),
        typeof(ContainerConfiguration),
        typeof(ConventionBuilder),
    ];

    private static readonly string[] SharedAssemblyNames =
    [
        "Microsoft.Extensions.DependencyInjection.Abstractions",
    ];

    private readonly List<PluginInfo> _plugins = [];
    private readonly List<LoadedFactory> _factories = [];
    private readonly List<IDisposable> _owned = [];
    private bool _disposed;

    private PluginCatalog(string directory) => Directory = directory;

    /// <summary>The folder that was scanned.</summary>
    public string Directory { get; }

    /// <summary>Scans <paramref name="pluginsDirectory"/>; never throws for a bad plugin.</summary>
    public static PluginCatalog Load(string pluginsDirectory, ILogger logger)
    {
        var catalog = new PluginCatalog(Path.GetFullPath(pluginsDirectory));
        if (!System.IO.Directory.Exists(catalog.Directory))
        {
            logger.LogWarning("Plugins folder {PluginsDirectory} does not exist; no plugins loaded", catalog.Directory);
            return catalog;
        }

        foreach (var stray in System.IO.Directory.GetFiles(catalog.Directory, "*.dll"))
        {
            logger.LogWarning("Ignoring {Path}: each plugin must be in its own folder under {PluginsDirectory}", stray, catalog.Directory);
        }

        var folders = System.IO.Directory.GetDirectories(catalog.Directory);
        Array.Sort(folders, StringComparer.Ordinal);
        foreach (var folder in folders)
        {
            catalog.LoadFolder(folder, logger);
        }

        return catalog;
    }

    /// <summary>Every plugin found, loaded or not, in the order they were found.</summary>
    public IReadOnlyList<PluginInfo> Plugins => _plugins;

    /// <summary>Names of loaded factories of this contract, e.g. NamesOf&lt;IProxyFactory&gt;().</summary>
    public IReadOnlyList<string> NamesOf<TFactory>()
        => _factories.Where(f => f.Factory is TFactory).Select(f => f.Info.Name).ToList();

    /// <summary>
    /// The factory named <paramref name="name"/>; throws <see cref="PluginLoadException"/> with
    /// the load error if that plugin exists but failed, or listing available names if none has it.
    /// </summary>
    public TFactory Get<TFactory>(string name)
    {
        foreach (var loaded in _factories)
        {
            if (loaded.Info.Name == name && loaded.Factory is TFactory factory)
            {
                return factory;
            }
        }

        var kind = KindOf<TFactory>();
        var failed = _plugins.FirstOrDefault(p => !p.Loaded && p.Name == name && (p.Kind == kind || p.Kind == UnknownKind));
        if (failed is not null)
        {
            throw new PluginLoadException($"{kind} plugin '{name}' ({failed.AssemblyPath}) could not be loaded: {failed.Error}");
        }

        var available = NamesOf<TFactory>();
        var availableText = available.Count == 0 ? "none" : string.Join(", ", available);
        var otherKind = _factories.FirstOrDefault(f => f.Info.Name == name);
        if (otherKind is not null)
        {
            throw new PluginLoadException(
                $"plugin '{name}' ({otherKind.Info.AssemblyPath}) is a {otherKind.Info.Kind} plugin, not a {kind} plugin; available {kind} plugins: {availableText}");
        }

        throw new PluginLoadException($"no {kind} plugin named '{name}' in {Directory}; available: {availableText}");
    }

    /// <summary>All loaded factories of this contract with their names.</summary>
    public IReadOnlyList<(string Name, TFactory Factory)> All<TFactory>()
        => _factories.Where(f => f.Factory is TFactory).Select(f => (f.Info.Name, (TFactory)f.Factory)).ToList();

    /// <summary>"proxy", "psk" or "flow-sink" for the three plugin contracts; the type name otherwise.</summary>
    public static string KindOf<TFactory>() => KindOf(typeof(TFactory));

    private static string KindOf(Type contract)
    {
        foreach (var (type, kind) in Contracts)
        {
            if (type == contract)
            {
                return kind;
            }
        }

        return contract.Name;
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        for (var i = _owned.Count - 1; i >= 0; i--)
        {
            try
            {
                _owned[i].Dispose();
            }
            catch (Exception)
            {
                // A plugin's own Dispose failing must not stop the others from being released.
            }
        }

        _owned.Clear();
    }

    private void LoadFolder(string folder, ILogger logger)
    {
        var folderName = Path.GetFileName(folder);
        var (mainAssembly, locateError) = PluginAssemblyLocator.FindMainAssembly(folder);
        if (mainAssembly is null)
        {
            Fail(logger, new PluginInfo(folderName, UnknownKind, null, folder, false, locateError, null));
            return;
        }

        // Checked before anything is loaded: a plugin built against a contract this host does not implement
        // would fail later with a type-load error that names no cause.
        var builtAgainst = PluginAssemblyLocator.ContractReference(mainAssembly);
        if (builtAgainst is not null && PluginContractVersion.Check(builtAgainst) is { } refused)
        {
            Fail(logger, new PluginInfo(folderName, UnknownKind, null, mainAssembly, false, refused, null));
            return;
        }

        Assembly assembly;
        CompositionHost container;
        try
        {
            var loader = PluginLoader.CreateFromAssemblyFile(mainAssembly, SharedTypes, config =>
            {
                foreach (var name in SharedAssemblyNames)
                {
                    config.SharedAssemblies.Add(new AssemblyName(name));
                }
            });
            _owned.Add(loader);
            assembly = loader.LoadDefaultAssembly();
            container = new ContainerConfiguration().WithAssembly(assembly).CreateContainer();
            _owned.Add(container);
        }
        catch (Exception ex)
        {
            Fail(logger, new PluginInfo(folderName, UnknownKind, null, mainAssembly, false, $"could not load the assembly: {Describe(ex)}", null));
            return;
        }

        var version = assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
            ?? assembly.GetName().Version?.ToString();

        var exported = 0;
        foreach (var (contract, kind) in Contracts)
        {
            foreach (var (name, factory, error) in ReadExports(container, contract))
            {
                exported++;
                var pluginName = string.IsNullOrEmpty(name) ? folderName : name;
                if (error is not null)
                {
                    Fail(logger, new PluginInfo(pluginName, kind, version, mainAssembly, false, error, null));
                    continue;
                }

                // Names are unique per kind: Get<T> selects by kind and name.
                var duplicate = _plugins.FirstOrDefault(p => p.Loaded && p.Kind == kind && p.Name == pluginName);
                if (duplicate is not null)
                {
                    Fail(logger, new PluginInfo(pluginName, kind, version, mainAssembly, false,
                        $"duplicate {kind} plugin name '{pluginName}': already provided by {duplicate.AssemblyPath}", null));
                    continue;
                }

                string? description;
                try
                {
                    description = ((IPluginFactory)factory!).Description;
                }
                catch (Exception ex)
                {
                    Fail(logger, new PluginInfo(pluginName, kind, version, mainAssembly, false, $"its Description threw: {Describe(ex)}", null));
                    continue;
                }

                var info = new PluginInfo(pluginName, kind, version, mainAssembly, true, null, description);
                _plugins.Add(info);
                _factories.Add(new LoadedFactory(info, factory!));
                logger.LogInformation("Loaded {Kind} plugin {Plugin} {Version} from {Path}", kind, pluginName, version, mainAssembly);
            }
        }

        if (exported == 0)
        {
            Fail(logger, new PluginInfo(folderName, UnknownKind, version, mainAssembly, false,
                "it exports no IProxyFactory, IPresharedKeyProviderFactory or IFlowSinkFactory (missing [Export(typeof(...))]?)", null));
        }
    }

    private static List<(string? Name, object? Factory, string? Error)> ReadExports(CompositionHost container, Type contract)
    {
        var results = new List<(string?, object?, string?)>();
        List<object> lazies;
        try
        {
            // Lazy exports with their raw metadata give the name without running the constructor,
            // so a factory whose constructor throws is still reported under its own name, and an
            // export without [PluginName] is seen (a PluginMetadata view would drop or reject it).
            var lazyType = typeof(Lazy<,>).MakeGenericType(contract, typeof(IDictionary<string, object>));
            lazies = container.GetExports(lazyType).ToList();
        }
        catch (Exception ex)
        {
            results.Add((null, null, $"composing its {contract.Name} exports failed: {Describe(ex)}"));
            return results;
        }

        foreach (var lazy in lazies)
        {
            var lazyType = lazy.GetType();
            var metadata = (IDictionary<string, object>)lazyType.GetProperty("Metadata")!.GetValue(lazy)!;
            var name = metadata.TryGetValue(nameof(PluginMetadata.Name), out var value) ? value as string : null;
            if (string.IsNullOrWhiteSpace(name))
            {
                results.Add((null, null, $"it exports an {contract.Name} without [PluginName(\"...\")]"));
                continue;
            }

            try
            {
                results.Add((name, lazyType.GetProperty("Value")!.GetValue(lazy), null));
            }
            catch (Exception ex)
            {
                results.Add((name, null, $"its {contract.Name} could not be created: {Describe(ex)}"));
            }
        }

        return results;
    }

    private void Fail(ILogger logger, PluginInfo info)
    {
        _plugins.Add(info);
        logger.LogWarning("Plugin {Plugin} at {Path} did not load: {Reason}", info.Name, info.AssemblyPath, info.Error);
    }

    /// <summary>The innermost meaningful message: reflection and composition wrap the real cause.</summary>
    internal static string Describe(Exception exception)
    {
        var current = exception;
        while (current is TargetInvocationException or CompositionFailedException or TypeInitializationException && current.InnerException is not null)
        {
            current = current.InnerException;
        }

        if (current is ReflectionTypeLoadException typeLoad && typeLoad.LoaderExceptions.FirstOrDefault(e => e is not null) is { } first)
        {
            current = first;
        }

        return $"{current.GetType().Name}: {current.Message}";
    }

    private sealed record LoadedFactory(PluginInfo Info, object Factory);
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
