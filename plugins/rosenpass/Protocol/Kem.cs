using System.Reflection;
using Org.BouncyCastle.Crypto;
using Org.BouncyCastle.Crypto.Generators;
using Org.BouncyCastle.Crypto.Kems;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Pqc.Crypto.Cmce;
using Org.BouncyCastle.Security;

namespace Modular.Plugins.Rosenpass.Protocol;

/// <summary>
/// A key-encapsulation mechanism as the handshake uses it: key generation, encapsulation to a
/// public key, decapsulation with a secret key. An interface (and not BouncyCastle directly) so the
/// handshake can be fed recorded KEM outputs (the official vectors) and the KEM stays swappable.
/// Implementations are stateless and thread-safe.
/// </summary>
internal interface IKem
{
    int PublicKeyLength { get; }

    int CiphertextLength { get; }

    /// <summary>A fresh key pair (secret key encoding, public key encoding).</summary>
    (byte[] SecretKey, byte[] PublicKey) GenerateKeyPair();

    /// <summary>Encapsulates a fresh 32-byte shared key to <paramref name="publicKey"/>; returns (shared key, ciphertext).</summary>
    (byte[] SharedKey, byte[] Ciphertext) Encapsulate(ReadOnlySpan<byte> publicKey);

    /// <summary>
    /// The shared key inside <paramref name="ciphertext"/>. Both KEMs reject implicitly: a forged
    /// ciphertext gives a pseudo-random key (which then fails the next AEAD), not an error.
    /// </summary>
    byte[] Decapsulate(ReadOnlySpan<byte> secretKey, ReadOnlySpan<byte> ciphertext);
}

/// <summary>
/// Classic McEliece-460896 (BouncyCastle's round-3 parameter set "mceliece460896r3", whose sizes
/// equal the round-4 ones upstream pins: public key 524,160, secret key 13,608, ciphertext 156).
/// The static KEM: key generation takes seconds, so keys are made once and kept.
/// BouncyCastle's public API cuts the session key to the parameter set's "default key size"
/// (192 bits for 460896); the specification (and upstream, via liboqs) use the full 256-bit
/// SHAKE256 output, of which the 192 bits are a prefix. Its 256-bit overloads are private, so they
/// are called by reflection (BouncyCastle is pinned centrally; the vector test
/// KemTests.McEliece_DecapsulatesUpstreamsRecordedCiphertexts fails if an update breaks this).
/// </summary>
internal sealed class McElieceKem : IKem
{
    public const int PublicKeySize = 524_160;
    public const int SecretKeySize = 13_608;
    public const int CiphertextSize = 156;
    private const int SessionKeyBits = 256;

    public static readonly McElieceKem Instance = new();

    private static readonly CmceParameters Parameters = CmceParameters.mceliece460896r3;

    private static readonly MethodInfo GenerateFullKey = typeof(CmceKemGenerator).GetMethod(
        "GenerateEncapsulated", BindingFlags.Instance | BindingFlags.NonPublic, [typeof(AsymmetricKeyParameter), typeof(int)])
        ?? throw new MissingMethodException("BouncyCastle's CmceKemGenerator lacks GenerateEncapsulated(key, bits): the McEliece KEM needs its 256-bit session key.");

    private static readonly MethodInfo ExtractFullKey = typeof(CmceKemExtractor).GetMethod(
        "ExtractSecret", BindingFlags.Instance | BindingFlags.NonPublic, [typeof(byte[]), typeof(int)])
        ?? throw new MissingMethodException("BouncyCastle's CmceKemExtractor lacks ExtractSecret(ciphertext, bits): the McEliece KEM needs its 256-bit session key.");

    public int PublicKeyLength => PublicKeySize;

    public int CiphertextLength => CiphertextSize;

    public (byte[] SecretKey, byte[] PublicKey) GenerateKeyPair()
    {
        var generator = new CmceKeyPairGenerator();
        generator.Init(new CmceKeyGenerationParameters(new SecureRandom(), Parameters));
        var pair = generator.GenerateKeyPair();
        return (((CmcePrivateKeyParameters)pair.Private).GetPrivateKey(), ((CmcePublicKeyParameters)pair.Public).GetPublicKey());
    }

    public (byte[] SharedKey, byte[] Ciphertext) Encapsulate(ReadOnlySpan<byte> publicKey)
    {
        if (publicKey.Length != PublicKeySize)
        {
            throw new ArgumentException($"A McEliece-460896 public key is {PublicKeySize} bytes.", nameof(publicKey));
        }

        var generator = new CmceKemGenerator(new SecureRandom());
        using var encapsulated = (ISecretWithEncapsulation)GenerateFullKey.Invoke(
            generator, [new CmcePublicKeyParameters(Parameters, publicKey.ToArray()), SessionKeyBits])!;
        return (encapsulated.GetSecret(), encapsulated.GetEncapsulation());
    }

    public byte[] Decapsulate(ReadOnlySpan<byte> secretKey, ReadOnlySpan<byte> ciphertext)
    {
        if (secretKey.Length != SecretKeySize || ciphertext.Length != CiphertextSize)
        {
            throw new ArgumentException($"McEliece-460896 takes a {SecretKeySize}-byte secret key and a {CiphertextSize}-byte ciphertext.");
        }

        var key = secretKey.ToArray();
        try
        {
            var extractor = new CmceKemExtractor(new CmcePrivateKeyParameters(Parameters, key));
            return (byte[])ExtractFullKey.Invoke(extractor, [ciphertext.ToArray(), SessionKeyBits])!;
        }
        finally
        {
            Array.Clear(key);
        }
    }
}

/// <summary>
/// ML-KEM-512 (FIPS 203), the ephemeral KEM: public key 800 (the secret key is kept in BouncyCastle's own encoding),
/// ciphertext 768, the sizes of upstream's round-3 Kyber-512 (whose outputs differ, so only the
/// symmetric layer of upstream's vectors can be compared).
/// </summary>
internal sealed class MlKem512 : IKem
{
    public const int PublicKeySize = 800;
    public const int CiphertextSize = 768;

    public static readonly MlKem512 Instance = new();

    private static readonly MLKemParameters Parameters = MLKemParameters.ml_kem_512;

    public int PublicKeyLength => PublicKeySize;

    public int CiphertextLength => CiphertextSize;

    public (byte[] SecretKey, byte[] PublicKey) GenerateKeyPair()
    {
        var generator = new MLKemKeyPairGenerator();
        generator.Init(new MLKemKeyGenerationParameters(new SecureRandom(), Parameters));
        var pair = generator.GenerateKeyPair();
        return (((MLKemPrivateKeyParameters)pair.Private).GetEncoded(), ((MLKemPublicKeyParameters)pair.Public).GetEncoded());
    }

    public (byte[] SharedKey, byte[] Ciphertext) Encapsulate(ReadOnlySpan<byte> publicKey)
    {
        if (publicKey.Length != PublicKeySize)
        {
            throw new ArgumentException($"An ML-KEM-512 public key is {PublicKeySize} bytes.", nameof(publicKey));
        }

        var encapsulator = new MLKemEncapsulator(Parameters);
        encapsulator.Init(new ParametersWithRandom(MLKemPublicKeyParameters.FromEncoding(Parameters, publicKey.ToArray()), new SecureRandom()));
        var sharedKey = new byte[KeyedHash.HashLength];
        var ciphertext = new byte[CiphertextSize];
        encapsulator.Encapsulate(ciphertext, sharedKey);
        return (sharedKey, ciphertext);
    }

    public byte[] Decapsulate(ReadOnlySpan<byte> secretKey, ReadOnlySpan<byte> ciphertext)
    {
        if (ciphertext.Length != CiphertextSize)
        {
            throw new ArgumentException($"An ML-KEM-512 ciphertext is {CiphertextSize} bytes.", nameof(ciphertext));
        }

        var key = secretKey.ToArray();
        try
        {
            var decapsulator = new MLKemDecapsulator(Parameters);
            decapsulator.Init(MLKemPrivateKeyParameters.FromEncoding(Parameters, key));
            var sharedKey = new byte[KeyedHash.HashLength];
            decapsulator.Decapsulate(ciphertext, sharedKey);
            return sharedKey;
        }
        finally
        {
            Array.Clear(key);
        }
    }
}
