using Modular.Control.Management;
using Modular.Server.Store;

namespace Modular.Server.Networks;

/// <summary>
/// The account's groups, policies and resources at one network serial, and the firewall rules they give
/// each peer. Group memberships are indexed once per snapshot, so a peer's rules cost a pass over the
/// policies and their groups' members, not a store query.
/// </summary>
public sealed class PolicySet
{
    /// <summary>The overlay network: a rule for the All group is one prefix rule, not one rule per peer.</summary>
    private static readonly string OverlayPrefix = $"{OverlayNetwork.ToAddress(OverlayNetwork.Network)}/{OverlayNetwork.PrefixLength}";

    private readonly Dictionary<string, HashSet<string>> _members;
    private readonly Dictionary<string, NetworkResourceRecord> _resourcesById;
    private Dictionary<string, PeerRecord>? _peersById;

    /// <summary>Per group, its members' (peer ID, "ip/32") in address order; built once per snapshot, shared by every stream.</summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, (string PeerId, string PeerIp)[]> _memberIps = new(StringComparer.Ordinal);

    public PolicySet(IReadOnlyList<GroupRecord> groups, IReadOnlyList<PolicyRecord> policies, IReadOnlyList<NetworkResourceRecord> resources)
    {
        Groups = groups;
        Policies = policies;
        Resources = resources;
        _members = groups.ToDictionary(g => g.Id, g => new HashSet<string>(g.PeerIds, StringComparer.Ordinal), StringComparer.Ordinal);
        _resourcesById = resources.ToDictionary(r => r.Id, StringComparer.Ordinal);
    }

    /// <summary>No groups, no policies: every peer isolated.</summary>
    public static PolicySet Empty { get; } = new([], [], []);

    public IReadOnlyList<GroupRecord> Groups { get; }

    public IReadOnlyList<PolicyRecord> Policies { get; }

    public IReadOnlyList<NetworkResourceRecord> Resources { get; }

    /// <summary>The rules that concern <paramref name="self"/> (<paramref name="peers"/> must be the same list for every call on this set): inbound from peers allowed (or denied) to reach it, outbound to peers it may reach.</summary>
    public IReadOnlyList<FirewallRule> RulesFor(PeerRecord self, IReadOnlyList<PeerRecord> peers)
    {
        var rules = new List<FirewallRule>();
        var seen = new HashSet<(string RuleId, string PeerIp, string Direction)>();
        foreach (var policy in Policies)
        {
            if (policy.DestinationGroupId is not { } destination)
            {
                AddRouteRules(rules, seen, policy, self, peers);
                continue;
            }

            var source = policy.SourceGroupId;
            var inSource = IsMember(source, self.Id);
            var inDestination = IsMember(destination, self.Id);
            if (inDestination)
            {
                Add(rules, seen, policy, "in", source, self, peers);
            }

            if (inSource)
            {
                Add(rules, seen, policy, "out", destination, self, peers);
            }

            if (policy.Bidirectional)
            {
                if (inSource)
                {
                    Add(rules, seen, policy, "in", destination, self, peers);
                }

                if (inDestination)
                {
                    Add(rules, seen, policy, "out", source, self, peers);
                }
            }
        }

        return rules;
    }

    /// <summary>
    /// The routes in <paramref name="self"/>'s map: every resource it serves (so it forwards them), and every
    /// resource another peer serves that some accept policy lets it reach (so it sends them there).
    /// </summary>
    public IReadOnlyList<Modular.Control.Management.Route> RoutesFor(PeerRecord self, IReadOnlyList<PeerRecord> peers)
    {
        var routes = new List<Modular.Control.Management.Route>();
        if (Resources.Count == 0)
        {
            return routes;
        }

        var byId = _peersById ??= peers.ToDictionary(p => p.Id, StringComparer.Ordinal);
        foreach (var resource in Resources)
        {
            if (!byId.TryGetValue(resource.RoutingPeerId, out var router))
            {
                continue; // its routing peer was removed: nobody serves it
            }

            var serves = router.Id == self.Id;
            if (serves || Policies.Any(p => p.DestinationResourceId == resource.Id && p.Action == PolicyAction.Accept && IsMember(p.SourceGroupId, self.Id)))
            {
                routes.Add(new Modular.Control.Management.Route
                {
                    Id = resource.Id,
                    Name = resource.Name,
                    Network = resource.Address,
                    PeerWgPubKey = Google.Protobuf.ByteString.CopyFrom(router.PublicKey.ToArray()),
                    Metric = resource.Metric,
                    Masquerade = resource.Masquerade,
                });
            }
        }

        return routes;
    }

    /// <summary>The groups whose members some accept policy lets use <paramref name="resourceId"/> (for `routes list`).</summary>
    public IReadOnlyList<string> SourceGroupsOf(string resourceId)
        => [.. Policies.Where(p => p.DestinationResourceId == resourceId && p.Action == PolicyAction.Accept).Select(p => p.SourceGroupId).Distinct(StringComparer.Ordinal)];

    /// <summary>On the routing peer of a policy's resource: inbound rules for forwarded traffic from the source group to the resource.</summary>
    private void AddRouteRules(List<FirewallRule> rules, HashSet<(string, string, string)> seen, PolicyRecord policy, PeerRecord self, IReadOnlyList<PeerRecord> peers)
    {
        var resource = _resourcesById.GetValueOrDefault(policy.DestinationResourceId ?? "");
        if (resource is null || resource.RoutingPeerId != self.Id)
        {
            return;
        }

        var first = rules.Count;
        Add(rules, seen, policy, "in", policy.SourceGroupId, self, peers);
        for (var i = first; i < rules.Count; i++)
        {
            rules[i].Destination = resource.Address;
        }
    }

    private bool IsMember(string groupId, string peerId) => groupId == GroupRecord.AllGroupId || (_members.TryGetValue(groupId, out var members) && members.Contains(peerId));

    private void Add(List<FirewallRule> rules, HashSet<(string, string, string)> seen, PolicyRecord policy, string direction, string remoteGroup, PeerRecord self, IReadOnlyList<PeerRecord> peers)
    {
        if (remoteGroup == GroupRecord.AllGroupId)
        {
            Emit(rules, seen, policy, direction, OverlayPrefix);
            return;
        }

        if (!_members.TryGetValue(remoteGroup, out var members))
        {
            return;
        }

        var memberIps = _memberIps.GetOrAdd(remoteGroup, _ => [.. peers.Where(p => members.Contains(p.Id)).Select(p => (p.Id, $"{p.OverlayAddress}/32"))]);
        foreach (var (peerId, peerIp) in memberIps)
        {
            if (peerId != self.Id)
            {
                Emit(rules, seen, policy, direction, peerIp);
            }
        }
    }

    private static void Emit(List<FirewallRule> rules, HashSet<(string, string, string)> seen, PolicyRecord policy, string direction, string peerIp)
    {
        if (!seen.Add((policy.Id, peerIp, direction)))
        {
            return;
        }

        var rule = new FirewallRule
        {
            RuleId = policy.Id,
            PeerIp = peerIp,
            Direction = direction,
            Action = policy.Action == PolicyAction.Drop ? "drop" : "accept",
            Protocol = policy.Protocol.ToString().ToLowerInvariant(),
        };
        foreach (var span in policy.Ports)
        {
            rule.PortRanges.Add(new PortRange { Start = (uint)span.Start, End = (uint)span.End });
        }

        rules.Add(rule);
    }
}
