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
    public string Name { get; } = name;
}

/// <summary>Metadata every exported factory carries (filled by MEF from <see cref="PluginNameAttribute"/>).</summary>
public sealed class PluginMetadata
{
    public string Name { get; set; } = "";
}
