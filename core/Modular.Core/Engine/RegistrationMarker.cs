using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Modular.Core.Engine;

/// <summary>
/// <c>state_dir/registered</c>: this identity registered once, and with which setup key (its SHA-256, never the key).
/// A peer the operator removed must not come back by itself with the same reusable key; with a different key in its
/// config (the operator handed it a new one) it registers again. The file holds the management URL on its first line
/// and <c>setup_key_sha256=&lt;hex&gt;</c> on the next; a marker written before the hash was kept has only the URL,
/// and its key is unknown: such a marker refuses until a login succeeds, which records the configured key's hash.
/// </summary>
internal sealed class RegistrationMarker(string stateDir)
{
    private const string HashField = "setup_key_sha256=";

    public string Path { get; } = System.IO.Path.Combine(stateDir, "registered");

    /// <summary>What the marker says about registering with <paramref name="setupKey"/> when management does not know this peer.</summary>
    public RegistrationVerdict Check(string setupKey)
    {
        if (!File.Exists(Path))
        {
            return RegistrationVerdict.FirstTime;
        }

        var recorded = RecordedHash();
        return recorded is not null && setupKey.Length > 0 && !string.Equals(recorded, Hash(setupKey), StringComparison.Ordinal)
            ? RegistrationVerdict.NewKey
            : RegistrationVerdict.SameKey;
    }

    /// <summary>Records a registration (or a login of a peer whose marker is missing or has no key hash) with <paramref name="setupKey"/>.</summary>
    public void Record(Uri management, string setupKey, bool registered)
    {
        if (!registered && File.Exists(Path) && RecordedHash() is not null)
        {
            return; // a login: the key of the last registration stays recorded
        }

        Directory.CreateDirectory(stateDir);
        var text = new StringBuilder().Append(CultureInfo.InvariantCulture, $"{management}\n");
        if (setupKey.Length > 0)
        {
            text.Append(CultureInfo.InvariantCulture, $"{HashField}{Hash(setupKey)}\n");
        }

        File.WriteAllText(Path, text.ToString());
    }

    private string? RecordedHash()
    {
        try
        {
            return File.ReadLines(Path).FirstOrDefault(l => l.StartsWith(HashField, StringComparison.Ordinal))?[HashField.Length..].Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    internal static string Hash(string setupKey) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(setupKey)));
}

/// <summary>What <see cref="RegistrationMarker.Check"/> found.</summary>
internal enum RegistrationVerdict
{
    /// <summary>No marker: this identity never registered.</summary>
    FirstTime,

    /// <summary>Registered before with the configured key (or a key not recorded): a removed peer stays out.</summary>
    SameKey,

    /// <summary>Registered before with another key: the operator handed this peer a new one.</summary>
    NewKey,
}
