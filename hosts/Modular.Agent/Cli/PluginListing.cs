using System.Text;
using Modular.Abstractions.Proxy;
using Modular.Agent.Protocol;
using Modular.Agent.Status;
using Modular.Composition;
using Modular.Core.Status;

namespace Modular.Agent.Cli;

/// <summary>`modular plugins` output, from the daemon's catalog or one loaded by the CLI itself.</summary>
internal static class PluginListing
{
    /// <param name="peers">The daemon's peers, so each proxy plugin lists the relayed peers it carries; none when the CLI loaded the plugins itself.</param>
    public static ListPluginsReply ToReply(string pluginsDir, IEnumerable<PluginInfo> plugins, IReadOnlyList<PeerStatus>? peers = null)
    {
        var reply = new ListPluginsReply { PluginsDir = pluginsDir };
        foreach (var p in plugins)
        {
            var entry = new PluginEntry
            {
                Name = p.Name,
                Kind = p.Kind,
                Version = p.Version ?? "",
                AssemblyPath = p.AssemblyPath,
                Loaded = p.Loaded,
                Error = p.Error ?? "",
                Description = p.Description ?? "",
            };
            if (p.Loaded && p.Kind == PluginCatalog.KindOf<IProxyFactory>() && peers is not null)
            {
                // A proxy's Kind is its plugin's name (status shows it per peer), so the peers match by name.
                entry.RelayedPeers.AddRange(peers
                    .Where(peer => string.Equals(peer.Proxy, p.Name, StringComparison.Ordinal))
                    .Select(peer => peer.Name)
                    .Order(StringComparer.Ordinal));
            }

            reply.Plugins.Add(entry);
        }

        return reply;
    }

    /// <summary>{ "plugins_dir", "source", "plugins": [{ name, kind, version, assembly_path, loaded, error, description, relayed_peers }] }.</summary>
    public static string ToJson(ListPluginsReply reply, string source) => StatusJson.Serialize(new PluginsDocument(
        reply.PluginsDir,
        source,
        [.. reply.Plugins.Select(p => new PluginDocument(
            p.Name, p.Kind, NullIfEmpty(p.Version), p.AssemblyPath, p.Loaded, NullIfEmpty(p.Error), NullIfEmpty(p.Description), [.. p.RelayedPeers]))]));

    public static string ToText(ListPluginsReply reply, string source)
    {
        var text = new StringBuilder();
        text.Append("Plugins in ").Append(reply.PluginsDir).Append(" (").Append(source).AppendLine("):");
        if (reply.Plugins.Count == 0)
        {
            text.AppendLine("  (none)");
            return text.ToString();
        }

        var nameWidth = Math.Max(4, reply.Plugins.Max(p => p.Name.Length));
        var kindWidth = Math.Max(4, reply.Plugins.Max(p => p.Kind.Length));
        var versionWidth = Math.Max(7, reply.Plugins.Max(p => ShortVersion(p.Version).Length));
        text.AppendLine($"  {"NAME".PadRight(nameWidth)}  {"KIND".PadRight(kindWidth)}  {"VERSION".PadRight(versionWidth)}  STATUS");
        foreach (var p in reply.Plugins.OrderBy(p => p.Loaded ? 0 : 1).ThenBy(p => p.Name, StringComparer.Ordinal))
        {
            var state = p.Loaded ? "loaded" : "NOT LOADED";
            text.AppendLine($"  {p.Name.PadRight(nameWidth)}  {p.Kind.PadRight(kindWidth)}  {ShortVersion(p.Version).PadRight(versionWidth)}  {state}");
            text.Append("      ").AppendLine(p.AssemblyPath);
            if (p.Description.Length > 0)
            {
                text.Append("      ").AppendLine(p.Description);
            }

            if (!p.Loaded)
            {
                text.Append("      why: ").AppendLine(p.Error);
            }

            if (p.RelayedPeers.Count > 0)
            {
                text.Append("      carries relayed peers: ").AppendLine(string.Join(", ", p.RelayedPeers));
            }
        }

        return text.ToString();
    }

    /// <summary>"0.1.0" of "0.1.0+commit": the build metadata is in --json for who needs it.</summary>
    private static string ShortVersion(string version)
    {
        var plus = version.IndexOf('+', StringComparison.Ordinal);
        return version.Length == 0 ? "-" : plus > 0 ? version[..plus] : version;
    }

    private static string? NullIfEmpty(string value) => value.Length == 0 ? null : value;
}
