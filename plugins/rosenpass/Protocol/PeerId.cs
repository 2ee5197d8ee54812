namespace Modular.Plugins.Rosenpass.Protocol;

/// <summary>A peer's id as Rosenpass computes it: pid = H(peerid, spk), spk its static public key.</summary>
internal static class PeerId
{
    public const int Length = KeyedHash.HashLength;

    public static byte[] Of(ProtocolVersion version, ReadOnlySpan<byte> staticPublicKey) =>
        Labels.For(version).PeerId.Mix(staticPublicKey).ToArray();
}
