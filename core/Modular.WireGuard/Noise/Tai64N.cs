using System.Buffers.Binary;

namespace Modular.WireGuard.Noise;

/// <summary>
/// TAI64N timestamps carried in handshake initiations: big-endian 2^62 + 10 + Unix seconds,
/// then big-endian nanoseconds. Compared as bytes, later is greater.
/// </summary>
internal static class Tai64N
{
    public const int Size = 12;

    private const ulong Base = (1UL << 62) + 10;

    // Whitening the nanoseconds (to ~16 ms) hides fine timing from anyone who learns the timestamp.
    private const uint WhitenerMask = 0x1000000 - 1;

    public static void Write(Span<byte> destination, DateTimeOffset time)
    {
        var unixSeconds = time.ToUnixTimeSeconds();
        var nanos = (uint)((time.UtcTicks % TimeSpan.TicksPerSecond) * 100);
        BinaryPrimitives.WriteUInt64BigEndian(destination, Base + (ulong)unixSeconds);
        BinaryPrimitives.WriteUInt32BigEndian(destination[8..], nanos & ~WhitenerMask);
    }

    /// <summary>True when <paramref name="candidate"/> is strictly after <paramref name="last"/>.</summary>
    public static bool IsAfter(ReadOnlySpan<byte> candidate, ReadOnlySpan<byte> last) => candidate[..Size].SequenceCompareTo(last[..Size]) > 0;
}
