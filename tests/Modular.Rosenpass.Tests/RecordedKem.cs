using Modular.Plugins.Rosenpass.Protocol;

namespace Modular.Rosenpass.Tests;

/// <summary>
/// A KEM that replays recorded outputs (the vectors' McEliece and Kyber answers): encapsulating to
/// a known public key gives its recorded (shared key, ciphertext), decapsulating a known ciphertext
/// gives its shared key, and key generation hands out recorded key pairs in order.
/// </summary>
internal sealed class RecordedKem(int publicKeyLength, int ciphertextLength) : IKem
{
    private readonly Dictionary<string, (byte[] SharedKey, byte[] Ciphertext)> _encapsulations = [];
    private readonly Dictionary<string, byte[]> _decapsulations = [];
    private readonly Queue<(byte[] SecretKey, byte[] PublicKey)> _keyPairs = new();

    public int PublicKeyLength => publicKeyLength;

    public int CiphertextLength => ciphertextLength;

    /// <summary>Records that encapsulating to <paramref name="publicKey"/> gives (shared key, ciphertext), and the way back.</summary>
    public RecordedKem Encapsulation(byte[] publicKey, byte[] sharedKey, byte[] ciphertext)
    {
        _encapsulations[Convert.ToHexString(publicKey)] = (sharedKey, ciphertext);
        _decapsulations[Convert.ToHexString(ciphertext)] = sharedKey;
        return this;
    }

    public RecordedKem KeyPair(byte[] secretKey, byte[] publicKey)
    {
        _keyPairs.Enqueue((secretKey, publicKey));
        return this;
    }

    public (byte[] SecretKey, byte[] PublicKey) GenerateKeyPair() => _keyPairs.Dequeue();

    public (byte[] SharedKey, byte[] Ciphertext) Encapsulate(ReadOnlySpan<byte> publicKey)
    {
        var (sharedKey, ciphertext) = _encapsulations[Convert.ToHexString(publicKey)];
        return ((byte[])sharedKey.Clone(), (byte[])ciphertext.Clone());
    }

    // An unknown (e.g. tampered) ciphertext gives a pseudo-random key, like implicit rejection.
    public byte[] Decapsulate(ReadOnlySpan<byte> secretKey, ReadOnlySpan<byte> ciphertext) =>
        _decapsulations.TryGetValue(Convert.ToHexString(ciphertext), out var sharedKey)
            ? (byte[])sharedKey.Clone()
            : System.Security.Cryptography.SHA256.HashData(ciphertext);
}

/// <summary>A random source replaying recorded values, one queue per requested length (so call order within a length matters only).</summary>
internal sealed class ScriptedRandom
{
    private readonly Dictionary<int, Queue<byte[]>> _values = [];

    public ScriptedRandom Add(byte[] value)
    {
        if (!_values.TryGetValue(value.Length, out var queue))
        {
            _values[value.Length] = queue = new Queue<byte[]>();
        }

        queue.Enqueue(value);
        return this;
    }

    public byte[] Next(int length) =>
        _values.TryGetValue(length, out var queue) && queue.Count > 0
            ? (byte[])queue.Dequeue().Clone()
            : throw new InvalidOperationException($"No recorded random value of {length} bytes left.");
}
