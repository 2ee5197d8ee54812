namespace Modular.Plugins.Rosenpass;

/// <summary>
/// This agent's static Rosenpass key pair, kept in the state directory: <c>rosenpass.sk</c> (mode 0600, never logged)
/// and <c>rosenpass.pk</c>. Made once (Classic McEliece key generation takes a while) and reused, so the fingerprint
/// peers know stays the same across restarts.
/// </summary>
internal sealed record StaticKeyPair(byte[] PublicKey, byte[] SecretKey)
{
    /// <summary>Reads the pair from <paramref name="stateDirectory"/>, or makes one with <paramref name="generate"/> and stores it.</summary>
    public static StaticKeyPair LoadOrCreate(string stateDirectory, Func<StaticKeyPair> generate)
    {
        var secretPath = Path.Combine(stateDirectory, "rosenpass.sk");
        var publicPath = Path.Combine(stateDirectory, "rosenpass.pk");
        if (File.Exists(secretPath) && File.Exists(publicPath))
        {
            return new StaticKeyPair(File.ReadAllBytes(publicPath), File.ReadAllBytes(secretPath));
        }

        var pair = generate();
        Directory.CreateDirectory(stateDirectory);
        Write(secretPath, pair.SecretKey);
        Write(publicPath, pair.PublicKey);
        return pair;
    }

    // Created with 0600 before a byte is written: the secret key is never readable by others, even for a moment.
    private static void Write(string path, byte[] bytes)
    {
        var temporary = path + ".tmp";
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }

        using (var file = new FileStream(temporary, options))
        {
            file.Write(bytes);
        }

        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>BLAKE2s-256 of the public key: how the map and management name it.</summary>
    public byte[] Fingerprint()
    {
        var digest = new Org.BouncyCastle.Crypto.Digests.Blake2sDigest(256);
        digest.BlockUpdate(PublicKey);
        var output = new byte[32];
        digest.DoFinal(output);
        return output;
    }

    /// <summary>
    /// A new Classic McEliece-460896 pair (a 524,160-byte public key), the static key Rosenpass uses, made and encoded
    /// the way the protocol library reads it (<see cref="Protocol.CryptoServer.GenerateStaticKeyPair"/>).
    /// </summary>
    public static StaticKeyPair GenerateMcEliece460896()
    {
        var (secret, pub) = Protocol.CryptoServer.GenerateStaticKeyPair();
        return new StaticKeyPair(pub, secret);
    }

    /// <summary>Never prints the secret key.</summary>
    public override string ToString() => $"StaticKeyPair(public {PublicKey.Length} bytes)";
}
