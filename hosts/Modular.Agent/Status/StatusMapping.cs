using System.Collections.Immutable;
using Google.Protobuf.WellKnownTypes;
using Modular.Abstractions.Peers;
using Modular.Agent.Protocol;
using Modular.Core.Status;

namespace Modular.Agent.Status;

/// <summary>Carries an <see cref="AgentStatus"/> across the daemon socket and back, losslessly.</summary>
internal static class StatusMapping
{
    public static StatusReply ToReply(AgentStatus status, bool includePeers)
    {
        var reply = new StatusReply
        {
            Ip = status.Ip,
            PublicKey = status.PublicKey,
            Interface = new InterfaceState
            {
                Name = status.Interface.Name,
                Mode = status.Interface.Mode,
                Port = status.Interface.Port,
                Mtu = status.Interface.Mtu,
            },
            Features = new FeatureState
            {
                LazyConnections = status.Features.LazyConnections,
                InactivityTimeout = status.Features.InactivityTimeout,
                ForceRelay = status.Features.ForceRelay,
                Proxy = status.Features.Proxy,
                Rosenpass = status.Features.Rosenpass,
                RosenpassPermissive = status.Features.RosenpassPermissive,
                Netflow = status.Features.Netflow,
                LazyConnectionsSource = status.Features.LazyConnectionsSource,
                RosenpassSource = status.Features.RosenpassSource,
                NetflowSource = status.Features.NetflowSource,
            },
            Management = ToProto(status.Management),
            Signal = ToProto(status.Signal),
            PeersTotal = status.Peers.Count,
            PeersConnected = status.Peers.Count(p => p.State == PeerConnectionState.Connected),
            PeersIdle = status.Peers.Count(p => p.State == PeerConnectionState.Idle),
            Firewall = ToProto(status.Firewall),
            Dns = ToProto(status.Dns),
            Flows = ToProto(status.Flows),
            EngineRestarts = status.EngineRestarts,
            Metrics = ToProto(status.Metrics),
            Ui = ToProto(status.Ui),
        };
        reply.Routes.AddRange(status.Routes.Select(ToProto));
        reply.Features.AlwaysConnected.AddRange(status.Features.AlwaysConnected);
        foreach (var (feature, reason) in status.Features.Unavailable)
        {
            reply.Features.Unavailable[feature] = reason;
        }

        reply.Relays.AddRange(status.Relays.Select(ToProto));
        if (includePeers)
        {
            reply.Peers.AddRange(status.Peers.Select(ToProto));
        }

        return reply;
    }

    public static AgentStatus FromReply(StatusReply reply) => new(
        reply.Ip,
        reply.PublicKey,
        new InterfaceStatus(reply.Interface.Name, reply.Interface.Mode, reply.Interface.Port, reply.Interface.Mtu),
        new FeatureStatus(
            reply.Features.LazyConnections,
            reply.Features.InactivityTimeout,
            [.. reply.Features.AlwaysConnected],
            reply.Features.ForceRelay,
            reply.Features.Proxy,
            reply.Features.Rosenpass,
            reply.Features.RosenpassPermissive,
            reply.Features.Netflow)
        {
            LazyConnectionsSource = SourceOrUnknown(reply.Features.LazyConnectionsSource),
            RosenpassSource = SourceOrUnknown(reply.Features.RosenpassSource),
            NetflowSource = SourceOrUnknown(reply.Features.NetflowSource),
            Unavailable = reply.Features.Unavailable.ToImmutableSortedDictionary(StringComparer.Ordinal),
        },
        FromProto(reply.Management),
        FromProto(reply.Signal),
        [.. reply.Relays.Select(FromProto)],
        [.. reply.Peers.Select(FromProto)])
    {
        Firewall = FromProto(reply.Firewall),
        Routes = [.. reply.Routes.Select(FromProto)],
        Dns = FromProto(reply.Dns),
        Flows = FromProto(reply.Flows),
        EngineRestarts = reply.EngineRestarts,
        Metrics = FromProto(reply.Metrics),
        Ui = FromProto(reply.Ui),
    };

    private static EndpointState ToProto(EndpointStatus endpoint) => new() { Listen = endpoint.Listen, Serving = endpoint.Serving, Warning = endpoint.Warning };

    private static EndpointStatus FromProto(EndpointState? endpoint)
        => endpoint is null ? EndpointStatus.Off : new EndpointStatus(endpoint.Listen, endpoint.Serving, endpoint.Warning);

    private static FlowState ToProto(FlowStatus flows)
    {
        var state = new FlowState { Running = flows.Running };
        state.Sinks.AddRange(flows.Sinks.Select(sink => new FlowSinkState
        {
            Name = sink.Name,
            Counts = sink.Counters is { } c
                ? new FlowSinkCounts { Recorded = c.Recorded, Sent = c.Sent, Acknowledged = c.Acknowledged, Dropped = c.Dropped, Exported = c.Exported, LastError = c.LastError }
                : null,
        }));
        return state;
    }

    private static FlowStatus FromProto(FlowState? flows) => flows is null
        ? FlowStatus.Off
        : new FlowStatus(flows.Running, [.. flows.Sinks.Select(sink => new FlowSinkStatus(
            sink.Name,
            sink.Counts is { } c ? new Modular.Abstractions.Flows.FlowSinkCounters(c.Recorded, c.Sent, c.Acknowledged, c.Dropped, c.Exported, c.LastError) : null))]);

    // A daemon that predates the field sends nothing: say so rather than guess.
    private static string SourceOrUnknown(string source) => source.Length > 0 ? source : "unknown";

    private static RouteState ToProto(RouteStatus route) => new()
    {
        Id = route.Id,
        Name = route.Name,
        Network = route.Network,
        Peer = route.Peer,
        Role = route.Role,
        ExitNode = route.ExitNode,
        Installed = route.Installed,
        Reason = route.Reason,
        Masquerade = route.Masquerade,
        Metric = route.Metric,
    };

    private static RouteStatus FromProto(RouteState route) => new(
        route.Id, route.Name, route.Network, route.Peer, route.Role, route.ExitNode, route.Installed, route.Reason, route.Masquerade, route.Metric);

    private static DnsState ToProto(DnsStatus dns) => new()
    {
        Enabled = dns.Enabled,
        Listening = dns.Listening,
        Zone = dns.Zone,
        Records = dns.Records,
        NameserverGroups = dns.NameserverGroups,
        Queries = dns.Queries,
        AnsweredLocally = dns.AnsweredLocally,
        Forwarded = dns.Forwarded,
        Nxdomain = dns.Nxdomain,
        Refused = dns.Refused,
        Servfail = dns.Servfail,
        Malformed = dns.Malformed,
    };

    private static DnsStatus FromProto(DnsState? dns) => dns is null
        ? DnsStatus.Off
        : new DnsStatus(dns.Enabled, dns.Listening, dns.Zone, dns.Records, dns.NameserverGroups, dns.Queries, dns.AnsweredLocally,
            dns.Forwarded, dns.Nxdomain, dns.Refused, dns.Servfail, dns.Malformed);

    private static FirewallState ToProto(FirewallStatus firewall)
    {
        var state = new FirewallState
        {
            Mode = firewall.Mode,
            Rules = firewall.Rules,
            DefaultDrops = firewall.DefaultDrops,
            InvalidDrops = firewall.InvalidDrops,
            MalformedDrops = firewall.MalformedDrops,
            FragmentDrops = firewall.FragmentDrops,
            TableFullDrops = firewall.TableFullDrops,
            ActiveFlows = firewall.ActiveFlows,
            Error = firewall.Error,
        };
        foreach (var (ruleId, drops) in firewall.DropsByRule)
        {
            state.DropsByRule[ruleId] = drops;
        }

        return state;
    }

    private static FirewallStatus FromProto(FirewallState? firewall) => firewall is null
        ? FirewallStatus.Off
        : new FirewallStatus(
            firewall.Mode,
            firewall.Rules,
            firewall.DropsByRule.ToImmutableSortedDictionary(StringComparer.Ordinal),
            firewall.DefaultDrops,
            firewall.InvalidDrops,
            firewall.MalformedDrops,
            firewall.FragmentDrops,
            firewall.TableFullDrops,
            firewall.ActiveFlows,
            firewall.Error);

    private static ServiceState ToProto(ServiceStatus service) => new()
    {
        Url = service.Url,
        Connected = service.Connected,
        Error = service.Error,
    };

    private static ServiceStatus FromProto(ServiceState? service)
        => service is null ? new ServiceStatus("", false, "unknown") : new ServiceStatus(service.Url, service.Connected, service.Error);

    private static PeerState ToProto(PeerStatus peer) => new()
    {
        Name = peer.Name,
        Ip = peer.Ip,
        PublicKey = peer.PublicKey,
        State = peer.State.ToString(),
        Reason = peer.Reason,
        ConnectionType = peer.ConnectionType?.ToString(),
        LocalCandidate = peer.LocalCandidate,
        RemoteCandidate = peer.RemoteCandidate,
        Relay = peer.Relay,
        Proxy = peer.Proxy,
        LastStateChange = ToTimestamp(peer.LastStateChange),
        LastHandshake = ToTimestamp(peer.LastHandshake),
        RxBytes = peer.RxBytes,
        TxBytes = peer.TxBytes,
        LatencyMs = peer.LatencyMs,
        QuantumResistant = peer.QuantumResistant,
        QuantumResistantSince = ToTimestamp(peer.QuantumResistantSince),
    };

    private static PeerStatus FromProto(PeerState peer) => new(
        peer.Name,
        peer.Ip,
        peer.PublicKey,
        System.Enum.TryParse<PeerConnectionState>(peer.State, out var state) ? state : PeerConnectionState.Idle,
        peer.Reason,
        System.Enum.TryParse<ConnectionType>(peer.ConnectionType, out var type) ? type : null,
        peer.LocalCandidate,
        peer.RemoteCandidate,
        peer.Relay,
        peer.Proxy,
        peer.LastStateChange?.ToDateTimeOffset(),
        peer.LastHandshake?.ToDateTimeOffset(),
        peer.RxBytes,
        peer.TxBytes,
        peer.LatencyMs,
        peer.QuantumResistant,
        peer.QuantumResistantSince?.ToDateTimeOffset());

    private static Timestamp? ToTimestamp(DateTimeOffset? time) => time is { } t ? Timestamp.FromDateTimeOffset(t) : null;
}
