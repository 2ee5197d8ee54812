using System.Security.Cryptography;
using Modular.Abstractions.WireGuard;
using NSec.Cryptography;

namespace Modular.Agent.Daemon;

/// <summary>
/// The agent's WireGuard identity: state_dir/private.key, base64 as `wg genkey` writes it,
/// mode 0600, created on first start. The private key never leaves this class except to the
/// engine; only the public key is logged or shown.
/// </summary>
internal static class PrivateKeyFile
{
    public const string FileName = "private.key";

    private const UnixFileMode OwnerOnlyFile = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const UnixFileMode OwnerOnlyDirectory = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    /// <summary>Creates <paramref name="stateDir"/> (0700) if needed and tightens its mode.</summary>
    public static void EnsureStateDirectory(string stateDir)
    {
        Directory.CreateDirectory(stateDir, OwnerOnlyDirectory);
        if ((File.GetUnixFileMode(stateDir) & ~OwnerOnlyDirectory) != 0)
        {
            File.SetUnixFileMode(stateDir, OwnerOnlyDirectory);
        }
    }

    /// <summary>Reads the key, or generates and stores a new one; returns (private, public).</summary>
    /// <exception cref="InvalidDataException">The file exists but holds no valid key.</exception>
    public static (WgKey PrivateKey, WgKey PublicKey, bool Created) LoadOrCreate(string stateDir)
    {
        EnsureStateDirectory(stateDir);
        var path = Path.Combine(stateDir, FileName);
        if (File.Exists(path))
        {
            // A key readable by others is a key to rotate, but refusing to start would lock the
            // operator out of their own network: tighten it and go on.
            if ((File.GetUnixFileMode(path) & ~OwnerOnlyFile) != 0)
            {
                File.SetUnixFileMode(path, OwnerOnlyFile);
            }

            var text = File.ReadAllText(path).Trim();
            if (!WgKey.TryParse(text, out var existing) || existing.IsZero)
            {
                throw new InvalidDataException($"{path}: not a WireGuard private key (expected 44 characters of base64 encoding 32 bytes)");
            }

            return (existing, PublicKeyOf(existing), false);
        }

        var privateKey = Generate();
        var temporary = path + ".tmp";
        var options = new FileStreamOptions
        {
            Mode = FileMode.Create,
            Access = FileAccess.Write,
            UnixCreateMode = OwnerOnlyFile,
        };
        using (var stream = new FileStream(temporary, options))
        using (var writer = new StreamWriter(stream))
        {
            writer.Write(privateKey.ToBase64());
            writer.Write('\n');
        }

        File.SetUnixFileMode(temporary, OwnerOnlyFile);
        File.Move(temporary, path, overwrite: false);
        return (privateKey, PublicKeyOf(privateKey), true);
    }

    /// <summary>32 random bytes clamped as an X25519 scalar (RFC 7748), as `wg genkey` does.</summary>
    public static WgKey Generate()
    {
        Span<byte> bytes = stackalloc byte[WgKey.Size];
        RandomNumberGenerator.Fill(bytes);
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        var key = new WgKey(bytes);
        CryptographicOperations.ZeroMemory(bytes);
        return key;
    }

    public static WgKey PublicKeyOf(WgKey privateKey)
    {
        Span<byte> raw = stackalloc byte[WgKey.Size];
        privateKey.CopyTo(raw);
        try
        {
            using var key = Key.Import(KeyAgreementAlgorithm.X25519, raw, KeyBlobFormat.RawPrivateKey);
            return new WgKey(key.PublicKey.Export(KeyBlobFormat.RawPublicKey));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(raw);
        }
    }
}
