using System.Composition;

namespace Modular.Abstractions.Plugins;

/// <summary>
/// The name a plugin's factory is selected by in TOML (e.g. <c>[proxy] kind = "udp"</c>).
/// Put it next to <c>[Export(typeof(IProxyFactory))]</c>; the loader reads it without
/// constructing the factory, so a factory whose constructor throws is still listed.
/// </summary>
[MetadataAttribute]
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class PluginNameAttribute(string name) : Attribute
{
    /// <summary>The plugin's name: lower-case, unique per kind, as TOML writes it.</summary>
    public string Name { get; } = name;
}

/// <summary>Metadata every exported factory carries (filled by MEF from <see cref="PluginNameAttribute"/>).</summary>
public sealed class PluginMetadata
{
    /// <summary>The plugin's name from <see cref="PluginNameAttribute"/>.</summary>
    public string Name { get; set; } = "";
}
