namespace Modular.Core.Firewall;

/// <summary>A connection's 5-tuple as seen in the direction of its first packet. A value type: lookups never allocate.</summary>
public readonly record struct FlowKey(byte Protocol, UInt128 Source, UInt128 Destination, ushort SourcePort, ushort DestinationPort)
{
    /// <summary>The same connection seen from the other end (what a reply carries).</summary>
    public FlowKey Reverse() => new(Protocol, Destination, Source, DestinationPort, SourcePort);
}
