using System.Net;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Peers;

/// <summary>What the connection manager knows about one remote peer from the network map.</summary>
/// <param name="Ip">The peer's overlay address (first allowed IP, without prefix).</param>
public sealed record RemotePeerInfo(WgKey PublicKey, string Name, string Ip, IReadOnlyList<IPNetwork> AllowedIps, WgKey? PresharedKey)
{
    /// <summary>Since when <see cref="PresharedKey"/> has been a post-quantum (Rosenpass) key without a break; null: it is not one.</summary>
    public DateTimeOffset? QuantumResistantSince { get; init; }

    /// <summary>Equal in every field (records compare lists by reference, a map carries new lists every time).</summary>
    public bool SameAs(RemotePeerInfo other)
        => SameWireGuardConfig(other) && string.Equals(Name, other.Name, StringComparison.Ordinal) && string.Equals(Ip, other.Ip, StringComparison.Ordinal)
           && Nullable.Equals(QuantumResistantSince, other.QuantumResistantSince);

    public bool SameWireGuardConfig(RemotePeerInfo other)
        => PublicKey == other.PublicKey && Nullable.Equals(PresharedKey, other.PresharedKey)
           && AllowedIps.Count == other.AllowedIps.Count && AllowedIps.Zip(other.AllowedIps).All(p => p.First.Equals(p.Second));
}
