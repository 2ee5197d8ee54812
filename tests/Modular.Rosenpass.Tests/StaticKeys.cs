using Modular.Plugins.Rosenpass.Protocol;

namespace Modular.Rosenpass.Tests;

/// <summary>
/// Real McEliece-460896 key pairs, generated once per test run (key generation takes seconds) and
/// shared by every test class that needs them.
/// </summary>
internal static class StaticKeys
{
    private static readonly Lazy<(byte[] Secret, byte[] Public)> LazyA = new(CryptoServer.GenerateStaticKeyPair);
    private static readonly Lazy<(byte[] Secret, byte[] Public)> LazyB = new(CryptoServer.GenerateStaticKeyPair);
    private static readonly Lazy<(byte[] Secret, byte[] Public)> LazyC = new(CryptoServer.GenerateStaticKeyPair);

    public static (byte[] Secret, byte[] Public) A => LazyA.Value;

    public static (byte[] Secret, byte[] Public) B => LazyB.Value;

    /// <summary>A third party: a stranger to A and B.</summary>
    public static (byte[] Secret, byte[] Public) C => LazyC.Value;
}
