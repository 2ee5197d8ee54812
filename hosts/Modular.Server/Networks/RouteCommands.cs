using System.CommandLine;
using System.Text.Json;
using Modular.Server.Cli;

namespace Modular.Server.Networks;

/// <summary>
/// `modular-server routes list|exit-node`: network resources seen as routes (which peer serves which
/// prefix, whether it masquerades, who may use it), and the exit-node shorthand — the one way to create a
/// 0.0.0.0/0 resource. Subnet routes are created with `resources create`.
/// </summary>
internal static class RouteCommands
{
    public static Option<bool> NoMasqueradeOption() => new("--no-masquerade")
    {
        Description = "Forward with the clients' overlay addresses as source (the network must route 100.64.0.0/10 back to the routing peer)",
    };

    public static Option<int> MetricOption() => new("--metric")
    {
        Description = $"Lower wins when several peers serve the same prefix ({RouteValidator.MinMetric}-{RouteValidator.MaxMetric})",
        DefaultValueFactory = _ => NetworkResourceRecord.DefaultMetric,
    };

    public static Command Create(Option<string> config, CliDefaults defaults)
    {
        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var list = new Command("list", "List routes: each network resource, its prefix, routing peer, masquerade, metric and the groups allowed to use it") { json };
        list.SetAction((parse, ct) => ServerCli.WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
        {
            var resources = await store.ListResourcesAsync(ct);
            var set = new PolicySet(await store.ListGroupsAsync(ct), await store.ListPoliciesAsync(ct), resources);
            var groups = set.Groups.ToDictionary(g => g.Id, g => g.Name, StringComparer.Ordinal);
            var peers = (await store.ListPeersAsync(ct)).ToDictionary(p => p.Id, StringComparer.Ordinal);
            var rows = resources.Select(r => new
            {
                Resource = r.Name,
                r.Id,
                Network = r.Address,
                RoutingPeer = peers.TryGetValue(r.RoutingPeerId, out var peer) ? peer.Hostname : null,
                RoutingPeerIp = peers.TryGetValue(r.RoutingPeerId, out var p2) ? p2.OverlayAddress.ToString() : null,
                ExitNode = r.IsExitNode,
                r.Masquerade,
                r.Metric,
                Groups = set.SourceGroupsOf(r.Id).Select(g => groups.GetValueOrDefault(g, g)).ToList(),
            }).ToList();
            if (parse.GetValue(json))
            {
                Console.Out.WriteLine(JsonSerializer.Serialize(rows, ServerCli.Json));
                return 0;
            }

            Console.Out.WriteLine($"{"RESOURCE",-20} {"NETWORK",-18} {"ROUTING PEER",-28} {"MASQ",-4} {"METRIC",6}  GROUPS");
            foreach (var row in rows)
            {
                var router = row.RoutingPeer is null ? "(removed)" : $"{row.RoutingPeer} ({row.RoutingPeerIp})";
                var network = row.ExitNode ? $"{row.Network} exit" : row.Network;
                var users = row.Groups.Count == 0 ? "(no accept policy: unused)" : string.Join(", ", row.Groups);
                Console.Out.WriteLine($"{row.Resource,-20} {network,-18} {router,-28} {(row.Masquerade ? "yes" : "no"),-4} {row.Metric,6}  {users}");
            }

            return 0;
        }, ct));

        var peerArgument = new Argument<string>("peer") { Description = "The peer that becomes an exit node (name, name.zone, overlay IP or public key)" };
        var name = new Option<string>("--name") { Description = "Resource name; default exit-<peer hostname>" };
        var noMasquerade = NoMasqueradeOption();
        var metric = MetricOption();
        var exitNode = new Command("exit-node", "Make a peer an exit node: a 0.0.0.0/0 resource it serves (then allow groups with `policies create --destination-resource`)")
        {
            peerArgument, name, noMasquerade, metric,
        };
        exitNode.SetAction((parse, ct) => ServerCli.WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
        {
            var resource = await store.CreateResourceAsync(
                new NewResource(parse.GetValue(name) ?? "", NetworkResourceRecord.ExitNodeAddress, parse.GetValue(peerArgument)!, !parse.GetValue(noMasquerade), parse.GetValue(metric), ExitNode: true),
                ct);
            Console.Out.WriteLine(resource.Id);
            Console.Error.WriteLine($"created exit node '{resource.Name}' 0.0.0.0/0 ({resource.Id}); allow it with: policies create <name> --source <group> --destination-resource {resource.Name}");
            return 0;
        }, ct));

        return new Command("routes", "Routes: network resources and exit nodes served by routing peers") { list, exitNode };
    }
}
