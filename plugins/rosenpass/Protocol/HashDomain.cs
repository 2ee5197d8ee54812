using System.Text;

namespace Modular.Plugins.Rosenpass.Protocol;

/// <summary>
/// A point in Rosenpass's tree of hash domains: a 32-byte value and the hash it was made with.
/// <see cref="Mix(ReadOnlySpan{byte})"/> moves to the child H(value, data), so every label is
/// the hash of its parent and its name, and two different paths never meet.
/// The value can be key material (a chaining key is a hash domain too), so it is never printed.
/// </summary>
internal sealed class HashDomain
{
    private readonly byte[] _value;

    private HashDomain(ProtocolVersion version, byte[] value)
    {
        Version = version;
        _value = value;
    }

    /// <summary>The hash every step uses.</summary>
    public ProtocolVersion Version { get; }

    /// <summary>The 32-byte value (a label, or a key when used as one); callers must not keep it longer than needed.</summary>
    public ReadOnlySpan<byte> Value => _value;

    /// <summary>The root of the tree: the all-zero key.</summary>
    public static HashDomain Zero(ProtocolVersion version) => new(version, new byte[KeyedHash.KeyLength]);

    /// <summary>A domain with a known value (e.g. a chaining key restored from a biscuit).</summary>
    public static HashDomain FromValue(ProtocolVersion version, ReadOnlySpan<byte> value)
    {
        if (value.Length != KeyedHash.KeyLength)
        {
            throw new ArgumentException($"A hash domain is {KeyedHash.KeyLength} bytes.", nameof(value));
        }

        return new HashDomain(version, value.ToArray());
    }

    /// <summary>The child domain H(value, data).</summary>
    public HashDomain Mix(ReadOnlySpan<byte> data) => new(Version, KeyedHash.Hash(Version, _value, data));

    /// <summary>The child domain named by an ASCII label (UTF-8, no terminator, as upstream).</summary>
    public HashDomain Mix(string label) => Mix(Encoding.UTF8.GetBytes(label));

    /// <summary>A copy of the value; the caller owns (and should clear) it.</summary>
    public byte[] ToArray() => (byte[])_value.Clone();

    /// <summary>Never shows the value: it may be a key.</summary>
    public override string ToString() => $"HashDomain({Version})";
}
