using System.Buffers.Text;
using System.Runtime.CompilerServices;

namespace Modular.Abstractions.WireGuard;

/// <summary>
/// A 32-byte Curve25519 key (public, private or pre-shared) held by value, so it can key
/// dictionaries on the packet path without allocating. Its text form is standard base64,
/// as `wg` prints it. <see cref="ToString"/> prints the base64 form: never call it on a
/// private or pre-shared key that could reach a log; use <see cref="ToRedactedString"/>.
/// </summary>
public readonly struct WgKey : IEquatable<WgKey>
{
    public const int Size = 32;

    [InlineArray(Size)]
    private struct Bytes32
    {
        private byte _element0;
    }

    private readonly Bytes32 _bytes;

    public WgKey(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != Size)
        {
            throw new ArgumentException($"A WireGuard key is {Size} bytes, got {bytes.Length}.", nameof(bytes));
        }

        bytes.CopyTo(_bytes);
    }

    /// <summary>Copies the raw 32 bytes into <paramref name="destination"/>.</summary>
    public void CopyTo(Span<byte> destination) => ((ReadOnlySpan<byte>)_bytes).CopyTo(destination);

    public byte[] ToArray() => ((ReadOnlySpan<byte>)_bytes).ToArray();

    public bool IsZero => ((ReadOnlySpan<byte>)_bytes).IndexOfAnyExcept((byte)0) < 0;

    public static WgKey Parse(string base64)
    {
        if (!TryParse(base64, out var key))
        {
            throw new FormatException("A WireGuard key is 44 characters of base64 encoding 32 bytes.");
        }

        return key;
    }

    public static bool TryParse(string? base64, out WgKey key)
    {
        key = default;
        if (base64 is null || base64.Length != 44)
        {
            return false;
        }

        Span<byte> buffer = stackalloc byte[Size + 1];
        if (!Convert.TryFromBase64String(base64, buffer, out var written) || written != Size)
        {
            return false;
        }

        key = new WgKey(buffer[..Size]);
        return true;
    }

    /// <summary>Lower-case hex, the form the UAPI uses.</summary>
    public string ToHex() => Convert.ToHexStringLower(_bytes);

    public static WgKey FromHex(string hex) => new(Convert.FromHexString(hex));

    public string ToBase64() => Convert.ToBase64String(_bytes);

    /// <summary>First characters of the base64 form: enough to tell public keys apart in logs.</summary>
    public string ToShortString() => ToBase64()[..8] + "…";

    /// <summary>For secrets: says only whether the key is set.</summary>
    public string ToRedactedString() => IsZero ? "(none)" : "(hidden)";

    public override string ToString() => ToBase64();

    public bool Equals(WgKey other) => ((ReadOnlySpan<byte>)_bytes).SequenceEqual(other._bytes);

    public override bool Equals(object? obj) => obj is WgKey other && Equals(other);

    public override int GetHashCode()
    {
        ReadOnlySpan<byte> span = _bytes;
        return HashCode.Combine(
            BitConverter.ToInt64(span), BitConverter.ToInt64(span[8..]),
            BitConverter.ToInt64(span[16..]), BitConverter.ToInt64(span[24..]));
    }

    public static bool operator ==(WgKey left, WgKey right) => left.Equals(right);

    public static bool operator !=(WgKey left, WgKey right) => !left.Equals(right);
}
