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
    /// <summary>The key length in bytes.</summary>
    public const int Size = 32;

    [InlineArray(Size)]
    private struct Bytes32
    {
        private byte _element0;
    }

    private readonly Bytes32 _bytes;

    /// <summary>Copies a key from exactly <see cref="Size"/> bytes.</summary>
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

    /// <summary>The raw 32 bytes as a new array.</summary>
    public byte[] ToArray() => ((ReadOnlySpan<byte>)_bytes).ToArray();

    /// <summary>True for the all-zero (unset) key, e.g. <c>default</c>.</summary>
    public bool IsZero => ((ReadOnlySpan<byte>)_bytes).IndexOfAnyExcept((byte)0) < 0;

    /// <summary>Reads the base64 form; throws <see cref="FormatException"/> for anything else.</summary>
    public static WgKey Parse(string base64)
    {
        if (!TryParse(base64, out var key))
        {
            throw new FormatException("A WireGuard key is 44 characters of base64 encoding 32 bytes.");
        }

        return key;
    }

    /// <summary>Reads the base64 form; false (and <c>default</c>) for anything else.</summary>
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

    /// <summary>Reads the hex form the UAPI uses.</summary>
    public static WgKey FromHex(string hex) => new(Convert.FromHexString(hex));

    /// <summary>The standard base64 form, as <c>wg</c> prints it.</summary>
    public string ToBase64() => Convert.ToBase64String(_bytes);

    /// <summary>First characters of the base64 form: enough to tell public keys apart in logs.</summary>
    public string ToShortString() => ToBase64()[..8] + "…";

    /// <summary>For secrets: says only whether the key is set.</summary>
    public string ToRedactedString() => IsZero ? "(none)" : "(hidden)";

    /// <summary>The base64 form: never for a private or pre-shared key that could reach a log.</summary>
    public override string ToString() => ToBase64();

    /// <summary>Byte-wise equality.</summary>
    public bool Equals(WgKey other) => ((ReadOnlySpan<byte>)_bytes).SequenceEqual(other._bytes);

    /// <summary>Byte-wise equality with another <see cref="WgKey"/>.</summary>
    public override bool Equals(object? obj) => obj is WgKey other && Equals(other);

    /// <summary>A hash of the key bytes.</summary>
    public override int GetHashCode()
    {
        ReadOnlySpan<byte> span = _bytes;
        return HashCode.Combine(
            BitConverter.ToInt64(span), BitConverter.ToInt64(span[8..]),
            BitConverter.ToInt64(span[16..]), BitConverter.ToInt64(span[24..]));
    }

    /// <summary>Byte-wise equality.</summary>
    public static bool operator ==(WgKey left, WgKey right) => left.Equals(right);

    /// <summary>Byte-wise inequality.</summary>
    public static bool operator !=(WgKey left, WgKey right) => !left.Equals(right);
}
