using System.Security.Cryptography;
using Modular.Abstractions.WireGuard;
using Modular.Control.Crypto;

namespace Modular.Server.Hosting;

/// <summary>
/// The server's long-lived secrets, kept in data_dir as 0600 files so every instance and restart
/// sharing the directory agrees on them: the X25519 key agents seal to, and the relay token secret.
/// </summary>
public sealed class ServerSecrets : IDisposable
{
    public const string ServerKeyFile = "server.key";
    public const string RelaySecretFile = "relay.secret";

    private readonly byte[] _relaySecret;

    private ServerSecrets(X25519KeyPair serverKey, byte[] relaySecret)
    {
        ServerKey = serverKey;
        _relaySecret = relaySecret;
    }

    public X25519KeyPair ServerKey { get; }

    public ReadOnlySpan<byte> RelaySecret => _relaySecret;

    /// <summary>Loads the secrets from <paramref name="dataDir"/>, creating them (0600) on first start.</summary>
    public static ServerSecrets LoadOrCreate(string dataDir)
    {
        EnsureDataDir(dataDir);
        var keyPath = Path.Combine(dataDir, ServerKeyFile);
        X25519KeyPair serverKey;
        if (File.Exists(keyPath))
        {
            var text = File.ReadAllText(keyPath).Trim();
            if (!WgKey.TryParse(text, out var privateKey))
            {
                throw new InvalidDataException($"{keyPath} does not hold a base64 Curve25519 private key.");
            }

            serverKey = X25519KeyPair.FromPrivateKey(privateKey);
        }
        else
        {
            serverKey = X25519KeyPair.Generate();
            WritePrivate(keyPath, serverKey.ExportPrivateKey().ToBase64() + "\n");
        }

        var secretPath = Path.Combine(dataDir, RelaySecretFile);
        byte[] secret;
        if (File.Exists(secretPath))
        {
            secret = Convert.FromBase64String(File.ReadAllText(secretPath).Trim());
            if (secret.Length < 32)
            {
                throw new InvalidDataException($"{secretPath} must hold at least 32 random bytes in base64.");
            }
        }
        else
        {
            secret = RandomNumberGenerator.GetBytes(32);
            WritePrivate(secretPath, Convert.ToBase64String(secret) + "\n");
        }

        return new ServerSecrets(serverKey, secret);
    }

    public static void EnsureDataDir(string dataDir)
    {
        if (!Directory.Exists(dataDir))
        {
            Directory.CreateDirectory(dataDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
    }

    private static void WritePrivate(string path, string content)
    {
        // Create with 0600 from the start: never a moment where the secret is world-readable.
        var temp = path + ".tmp";
        using (var stream = new FileStream(temp, new FileStreamOptions
        {
            Mode = FileMode.Create,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        }))
        using (var writer = new StreamWriter(stream))
        {
            writer.Write(content);
        }

        File.SetUnixFileMode(temp, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        File.Move(temp, path, overwrite: false);
    }

    public void Dispose()
    {
        ServerKey.Dispose();
        CryptographicOperations.ZeroMemory(_relaySecret);
    }
}
