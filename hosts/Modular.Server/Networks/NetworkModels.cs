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

/// <summary>A subnet or single address reachable through a routing peer (store and CLI only so far: no routes or rules are derived yet).</summary>
public sealed record NetworkResourceRecord(string Id, string Name, string Address, string RoutingPeerId, DateTimeOffset CreatedAt);

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
