using System.CommandLine;
using System.Text.Json;
using Modular.Server.Cli;

namespace Modular.Server.Networks;

/// <summary>`modular-server groups|policies|resources ...`: the account's access control, on the same store the server reads.</summary>
internal static class NetworkCommands
{
    public static void AddTo(RootCommand root, Option<string> config, CliDefaults defaults)
    {
        root.Add(Groups(config, defaults));
        root.Add(Policies(config, defaults));
        root.Add(Resources(config, defaults));
        root.Add(RouteCommands.Create(config, defaults));
    }

    private static Command Groups(Option<string> config, CliDefaults defaults)
    {
        var createName = new Argument<string>("name") { Description = "Group name" };
        var create = new Command("create", "Create an empty group") { createName };
        create.SetAction((parse, ct) => ServerCli.WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
        {
            var group = await store.CreateGroupAsync(parse.GetValue(createName)!, ct);
            Console.Out.WriteLine($"created group {group.Name} ({group.Id})");
            return 0;
        }, ct));

        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var list = new Command("list", "List groups and their peers") { json };
        list.SetAction((parse, ct) => ServerCli.WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
        {
            var groups = await store.ListGroupsAsync(ct);
            var peers = (await store.ListPeersAsync(ct)).ToDictionary(p => p.Id);
            string Describe(string id) => peers.TryGetValue(id, out var p) ? $"{p.Hostname} ({p.OverlayAddress})" : id;
            if (parse.GetValue(json))
            {
                Console.Out.WriteLine(JsonSerializer.Serialize(
                    groups.Select(g => new
                    {
                        g.Id,
                        g.Name,
                        BuiltIn = g.IsBuiltIn,
                        Peers = g.PeerIds.Where(peers.ContainsKey).Select(id => new { Id = id, Name = peers[id].Hostname, Ip = peers[id].OverlayAddress.ToString() }),
                        CreatedAt = ServerCli.Iso(g.CreatedAt),
                    }),
                    ServerCli.Json));
                return 0;
            }

            Console.Out.WriteLine($"{"ID",-13} {"NAME",-20} {"PEERS",5}  MEMBERS");
            foreach (var g in groups)
            {
                Console.Out.WriteLine($"{g.Id,-13} {g.Name,-20} {g.PeerIds.Count,5}  {string.Join(", ", g.PeerIds.Select(Describe))}");
            }

            return 0;
        }, ct));

        var memberGroup = new Argument<string>("group") { Description = "Group name or id" };
        var memberPeer = new Argument<string>("peer") { Description = "Peer: name, name.zone (as `modular status -d` shows it), overlay IP or public key" };
        var addPeer = new Command("add-peer", "Add a peer to a group") { memberGroup, memberPeer };
        addPeer.SetAction((parse, ct) => ServerCli.WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
        {
            var added = await store.AddPeerToGroupAsync(parse.GetValue(memberGroup)!, parse.GetValue(memberPeer)!, ct);
            Console.Out.WriteLine(added ? "added" : "already a member");
            return 0;
        }, ct));

        var removeGroup = new Argument<string>("group") { Description = "Group name or id" };
        var removePeer = new Argument<string>("peer") { Description = "Peer: name, name.zone (as `modular status -d` shows it), overlay IP or public key" };
        var remove = new Command("remove-peer", "Remove a peer from a group") { removeGroup, removePeer };
        remove.SetAction((parse, ct) => ServerCli.WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
        {
            var removed = await store.RemovePeerFromGroupAsync(parse.GetValue(removeGroup)!, parse.GetValue(removePeer)!, ct);
            Console.Out.WriteLine(removed ? "removed" : "not a member");
            return 0;
        }, ct));

        var deleteName = new Argument<string>("group") { Description = "Group name or id" };
        var delete = new Command("delete", "Delete a group no policy uses") { deleteName };
        delete.SetAction((parse, ct) => ServerCli.WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
            await store.DeleteGroupAsync(parse.GetValue(deleteName)!, ct) ? 0 : ServerCli.Fail($"no group '{parse.GetValue(deleteName)}'"), ct));

        return new Command("groups", "Manage peer groups (the built-in All group holds every peer)") { create, list, addPeer, remove, delete };
    }

    private static Command Policies(Option<string> config, CliDefaults defaults)
    {
        var name = new Argument<string>("name") { Description = "Policy name" };
        var source = new Option<string>("--source") { Description = "Source group (name or id)", Required = true };
        var destination = new Option<string>("--destination") { Description = "Destination group (name or id)" };
        var destinationResource = new Option<string>("--destination-resource") { Description = "Destination network resource (name or id), instead of a group" };
        var protocol = new Option<string>("--protocol") { Description = "tcp | udp | icmp | all", DefaultValueFactory = _ => "all" };
        var ports = new Option<string>("--ports") { Description = "Destination ports, e.g. 80,443,8000-8100; default every port" };
        var action = new Option<string>("--action") { Description = "accept | drop", DefaultValueFactory = _ => "accept" };
        var bidirectional = new Option<bool>("--bidirectional") { Description = "The destination side may open connections to the source side too" };
        var create = new Command("create", "Create an access policy") { name, source, destination, destinationResource, protocol, ports, action, bidirectional };
        create.SetAction((parse, ct) => ServerCli.WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
        {
            var policy = await store.CreatePolicyAsync(
                new NewPolicy(parse.GetValue(name)!, parse.GetValue(source)!, parse.GetValue(destination), parse.GetValue(destinationResource), parse.GetValue(protocol)!, parse.GetValue(ports), parse.GetValue(action)!, parse.GetValue(bidirectional)),
                ct);
            Console.Out.WriteLine(policy.Id);
            Console.Error.WriteLine($"created policy '{policy.Name}' ({policy.Id})");
            return 0;
        }, ct));

        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var list = new Command("list", "List access policies") { json };
        list.SetAction((parse, ct) => ServerCli.WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
        {
            var policies = await store.ListPoliciesAsync(ct);
            var groups = (await store.ListGroupsAsync(ct)).ToDictionary(g => g.Id, g => g.Name);
            var resources = (await store.ListResourcesAsync(ct)).ToDictionary(r => r.Id, r => r.Name);
            string Target(PolicyRecord p) => p.DestinationGroupId is { } g ? groups.GetValueOrDefault(g, g) : "resource:" + resources.GetValueOrDefault(p.DestinationResourceId!, p.DestinationResourceId!);
            if (parse.GetValue(json))
            {
                Console.Out.WriteLine(JsonSerializer.Serialize(
                    policies.Select(p => new
                    {
                        p.Id,
                        p.Name,
                        Source = groups.GetValueOrDefault(p.SourceGroupId, p.SourceGroupId),
                        Destination = p.DestinationGroupId is { } g ? groups.GetValueOrDefault(g, g) : null,
                        DestinationResource = p.DestinationResourceId is { } r ? resources.GetValueOrDefault(r, r) : null,
                        Protocol = p.Protocol.ToString().ToLowerInvariant(),
                        Ports = PortSpan.Format(p.Ports),
                        Action = p.Action.ToString().ToLowerInvariant(),
                        p.Bidirectional,
                        CreatedAt = ServerCli.Iso(p.CreatedAt),
                    }),
                    ServerCli.Json));
                return 0;
            }

            Console.Out.WriteLine($"{"ID",-13} {"NAME",-20} {"SOURCE",-15} {"DESTINATION",-20} {"PROTO",-5} {"PORTS",-16} {"ACTION",-6} DIR");
            foreach (var p in policies)
            {
                var portText = p.Ports.Count == 0 ? "any" : PortSpan.Format(p.Ports);
                Console.Out.WriteLine($"{p.Id,-13} {p.Name,-20} {groups.GetValueOrDefault(p.SourceGroupId, p.SourceGroupId),-15} {Target(p),-20} {p.Protocol.ToString().ToLowerInvariant(),-5} {portText,-16} {p.Action.ToString().ToLowerInvariant(),-6} {(p.Bidirectional ? "<->" : "->")}");
            }

            return 0;
        }, ct));

        var deleteName = new Argument<string>("policy") { Description = "Policy name or id" };
        var delete = new Command("delete", "Delete an access policy") { deleteName };
        delete.SetAction((parse, ct) => ServerCli.WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
            await store.DeletePolicyAsync(parse.GetValue(deleteName)!, ct) ? 0 : ServerCli.Fail($"no policy '{parse.GetValue(deleteName)}'"), ct));

        return new Command("policies", "Manage access policies (a new account has 'Default': All <-> All)") { create, list, delete };
    }

    private static Command Resources(Option<string> config, CliDefaults defaults)
    {
        var name = new Argument<string>("name") { Description = "Resource name" };
        var address = new Option<string>("--address") { Description = "Subnet (10.0.0.0/24) or single address", Required = true };
        var routingPeer = new Option<string>("--routing-peer") { Description = "Peer that serves it (name, name.zone, overlay IP or public key)", Required = true };
        var noMasquerade = RouteCommands.NoMasqueradeOption();
        var metric = RouteCommands.MetricOption();
        var create = new Command("create", "Create a network resource served by a routing peer (a route; see `routes exit-node` for 0.0.0.0/0)") { name, address, routingPeer, noMasquerade, metric };
        create.SetAction((parse, ct) => ServerCli.WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
        {
            var resource = await store.CreateResourceAsync(
                new NewResource(parse.GetValue(name)!, parse.GetValue(address)!, parse.GetValue(routingPeer)!, !parse.GetValue(noMasquerade), parse.GetValue(metric)), ct);
            Console.Out.WriteLine(resource.Id);
            Console.Error.WriteLine($"created network resource '{resource.Name}' {resource.Address} ({resource.Id})");
            return 0;
        }, ct));

        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var list = new Command("list", "List network resources") { json };
        list.SetAction((parse, ct) => ServerCli.WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
        {
            var resources = await store.ListResourcesAsync(ct);
            var peers = (await store.ListPeersAsync(ct)).ToDictionary(p => p.Id, p => p.Hostname);
            if (parse.GetValue(json))
            {
                Console.Out.WriteLine(JsonSerializer.Serialize(
                    resources.Select(r => new { r.Id, r.Name, r.Address, RoutingPeer = peers.GetValueOrDefault(r.RoutingPeerId), r.RoutingPeerId, r.Masquerade, r.Metric, CreatedAt = ServerCli.Iso(r.CreatedAt) }),
                    ServerCli.Json));
                return 0;
            }

            Console.Out.WriteLine($"{"ID",-13} {"NAME",-20} {"ADDRESS",-20} ROUTING PEER");
            foreach (var r in resources)
            {
                Console.Out.WriteLine($"{r.Id,-13} {r.Name,-20} {r.Address,-20} {peers.GetValueOrDefault(r.RoutingPeerId) ?? "(removed)"}");
            }

            return 0;
        }, ct));

        var deleteName = new Argument<string>("resource") { Description = "Resource name or id" };
        var delete = new Command("delete", "Delete a network resource no policy uses") { deleteName };
        delete.SetAction((parse, ct) => ServerCli.WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
            await store.DeleteResourceAsync(parse.GetValue(deleteName)!, ct) ? 0 : ServerCli.Fail($"no network resource '{parse.GetValue(deleteName)}'"), ct));

        return new Command("resources", "Manage network resources (subnets behind routing peers)") { create, list, delete };
    }
}
