namespace Modular.Core.Firewall;

/// <summary>A connection's 5-tuple as seen in the direction of its first packet. A value type: lookups never allocate.</summary>
public readonly record struct FlowKey(byte Protocol, UInt128 Source, UInt128 Destination, ushort SourcePort, ushort DestinationPort)
{
    /// <summary>The same connection seen from the other end (what a reply carries).</summary>
    public FlowKey Reverse() => new(Protocol, Destination, Source, DestinationPort, SourcePort);

    // Hand-written: the generated members go through EqualityComparer and HashCode per field, which is
    // measurable on a per-packet table lookup.
    public bool Equals(FlowKey other) =>
        Source == other.Source && Destination == other.Destination && SourcePort == other.SourcePort
        && DestinationPort == other.DestinationPort && Protocol == other.Protocol;

    public override int GetHashCode()
    {
        var mixed = ((ulong)Source ^ ((ulong)(Source >> 64) * 0x9E3779B97F4A7C15UL))
            ^ (((ulong)Destination ^ ((ulong)(Destination >> 64) * 0x9E3779B97F4A7C15UL)) * 0xC2B2AE3D27D4EB4FUL)
            ^ ((((ulong)SourcePort << 24) | ((ulong)DestinationPort << 8) | Protocol) * 0x165667B19E3779F9UL);
        mixed ^= mixed >> 29;
        return (int)mixed ^ (int)(mixed >> 32);
    }
}
