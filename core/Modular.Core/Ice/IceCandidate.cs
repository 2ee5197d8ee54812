using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Net;

namespace Modular.Core.Ice;

/// <summary>Where a candidate address came from; the order is the preference (host first).</summary>
public enum CandidateType
{
    /// <summary>An address of one of this machine's (namespace's) interfaces.</summary>
    Host,

    /// <summary>Server-reflexive: this machine's address as a STUN server saw it (the NAT mapping).</summary>
    ServerReflexive,

    /// <summary>Peer-reflexive: learnt from where a peer's valid check came from.</summary>
    PeerReflexive,

    /// <summary>The relay.</summary>
    Relay,
}

/// <summary>One transport address a peer may be reachable at. Wire form: "host 198.18.0.2:51820".</summary>
public sealed record IceCandidate(CandidateType Type, IPEndPoint Endpoint)
{
    public static string TypeName(CandidateType type) => type switch
    {
        CandidateType.Host => "host",
        CandidateType.ServerReflexive => "srflx",
        CandidateType.PeerReflexive => "prflx",
        _ => "relay",
    };

    public override string ToString() => $"{TypeName(Type)} {Endpoint}";

    /// <summary>Parses the wire form; anything else (from a buggy or hostile peer) is refused, never thrown.</summary>
    public static bool TryParse(string? text, [NotNullWhen(true)] out IceCandidate? candidate)
    {
        candidate = null;
        if (string.IsNullOrEmpty(text) || text.Length > 80)
        {
            return false;
        }

        var space = text.IndexOf(' ', StringComparison.Ordinal);
        if (space <= 0)
        {
            return false;
        }

        CandidateType? type = text[..space] switch
        {
            "host" => CandidateType.Host,
            "srflx" => CandidateType.ServerReflexive,
            "prflx" => CandidateType.PeerReflexive,
            _ => null,
        };
        if (type is null || !IPEndPoint.TryParse(text[(space + 1)..], out var endpoint) || endpoint.Port == 0
            || endpoint.Address.Equals(IPAddress.Any) || endpoint.Address.Equals(IPAddress.IPv6Any))
        {
            return false;
        }

        candidate = new IceCandidate(type.Value, endpoint);
        return true;
    }

    /// <summary>Formats a port the invariant way (used in logs and status).</summary>
    public static string Format(IPEndPoint endpoint) => string.Create(CultureInfo.InvariantCulture, $"{endpoint}");
}
