using System.Globalization;

namespace Modular.Server.Networks;

/// <summary>A named set of peers. The built-in "All" group holds every peer implicitly and cannot be edited.</summary>
public sealed record GroupRecord(string Id, string Name, bool IsBuiltIn, IReadOnlyList<string> PeerIds, DateTimeOffset CreatedAt)
{
    public const string AllGroupId = "all";
    public const string AllGroupName = "All";
}

public enum PolicyProtocol
{
    All,
    Tcp,
    Udp,
    Icmp,
}

public enum PolicyAction
{
    Accept,
    Drop,
}

/// <summary>An inclusive destination port range.</summary>
public readonly record struct PortSpan(int Start, int End)
{
    public int Count => End - Start + 1;

    public override string ToString() => Start == End ? Start.ToString(CultureInfo.InvariantCulture) : $"{Start}-{End}";

    public static string Format(IReadOnlyList<PortSpan> ports) => ports.Count == 0 ? "" : string.Join(',', ports);
}

/// <summary>
/// An access policy: peers of <see cref="SourceGroupId"/> may open connections of <see cref="Protocol"/> to
/// <see cref="Ports"/> on peers of the destination group (or the destination network resource). With
/// <see cref="Bidirectional"/> the destination side may open them towards the source side too. Its
/// <see cref="Id"/> is the rule ID agents count drops and report flows under.
/// </summary>
public sealed record PolicyRecord(
    string Id,
    string Name,
    string SourceGroupId,
    string? DestinationGroupId,
    string? DestinationResourceId,
    PolicyProtocol Protocol,
    IReadOnlyList<PortSpan> Ports,
    PolicyAction Action,
    bool Bidirectional,
    DateTimeOffset CreatedAt)
{
    public const string DefaultPolicyId = "default";
}

/// <summary>
/// A subnet or single address reachable through a routing peer: a route. Clients that some accept policy
/// lets reach it send its prefix through <see cref="RoutingPeerId"/>; the routing peer forwards (and with
/// <see cref="Masquerade"/> source-NATs) what the policies allow. 0.0.0.0/0 makes the routing peer an exit node.
/// </summary>
/// <param name="Metric">Lower wins when several routing peers serve the same prefix (1-9999).</param>
public sealed record NetworkResourceRecord(string Id, string Name, string Address, string RoutingPeerId, DateTimeOffset CreatedAt, bool Masquerade = true, int Metric = NetworkResourceRecord.DefaultMetric)
{
    public const int DefaultMetric = 9999;

    public const string ExitNodeAddress = "0.0.0.0/0";

    /// <summary>True for the default route: the routing peer is an exit node.</summary>
    public bool IsExitNode => IsDefaultRoute(Address);

    public static bool IsDefaultRoute(string address) => address is ExitNodeAddress or "::/0";
}

/// <summary>A network resource as an administrator asked for it, before validation.</summary>
/// <param name="ExitNode">True only from the exit-node command: the one way to create a 0.0.0.0/0 resource.</param>
public sealed record NewResource(string Name, string Address, string RoutingPeer, bool Masquerade = true, int Metric = NetworkResourceRecord.DefaultMetric, bool ExitNode = false);

/// <summary>A policy as an administrator asked for it, before validation: every field is raw text.</summary>
public sealed record NewPolicy(string Name, string Source, string? Destination, string? DestinationResource, string Protocol, string? Ports, string Action, bool Bidirectional);

/// <summary>A valid-looking policy after <see cref="PolicyValidator"/>, with group and resource names still to resolve.</summary>
public sealed record ValidatedPolicy(string Name, string Source, string? Destination, string? DestinationResource, PolicyProtocol Protocol, IReadOnlyList<PortSpan> Ports, PolicyAction Action, bool Bidirectional);

/// <summary>Input refused; <see cref="Field"/> names what was wrong (as the CLI spells it, without dashes).</summary>
public sealed class NetworkValidationException : Exception
{
    public NetworkValidationException(string field, string message)
        : base($"{field}: {message}") => Field = field;

    public NetworkValidationException()
    {
        Field = "";
    }

    public NetworkValidationException(string message)
        : base(message)
    {
        Field = "";
    }

    public NetworkValidationException(string message, Exception innerException)
        : base(message, innerException)
    {
        Field = "";
    }

    public string Field { get; }
}
